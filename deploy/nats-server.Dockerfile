# A NATS server image built without pulling anything, for machines without
# registry access (the e2e test). Users with internet may use the official
# image instead (compose.yaml: NATS_IMAGE, default nats:2.15).
#
# deploy/build-images.sh builds nats-server statically on the host, at the
# version go.mod pins (the one the tests run embedded), into bin/image:
#
#   CGO_ENABLED=0 go build -trimpath -o bin/image/nats-server github.com/nats-io/nats-server/v2
#   docker build -f deploy/nats-server.Dockerfile -t pnpworker/nats-server:<version> bin/image
FROM scratch
COPY nats-server /nats-server
# The JetStream store: an empty directory owned by the server's user, so a
# fresh named volume mounted on /data is writable by it.
COPY --chown=65532:65532 data /data
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["--config", "/etc/nats/nats.conf"]
