# The pnp image: the static pnp binary, CA certificates for https image
# fetches, a non-root user. Nothing is pulled: FROM scratch, and the binary
# is built on the host (CGO_ENABLED=0), the GoReleaser pattern.
#
# Build it with deploy/build-images.sh (task image), which prepares the
# context directory bin/image:
#
#   CGO_ENABLED=0 go build -trimpath -o bin/image/pnp ./cmd/pnp
#   cp /etc/ssl/certs/ca-certificates.crt bin/image/
#   docker build -f Dockerfile -t pnpworker/pnp:dev bin/image
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY pnp /pnp
# 65532 is "nonroot" in distroless images; scratch has no /etc/passwd, and a
# numeric uid needs none.
USER 65532:65532
ENTRYPOINT ["/pnp"]
CMD ["--help"]
