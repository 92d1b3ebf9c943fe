# The Python worker image: the static pnp binary runs `pnp runner --worker`,
# which starts the Python worker processes and does everything NATS for
# them (docs/WORKER.md); the SDK (one file) and the worker's module sit next
# to it. BASE is any image with python3 and the packages the module
# imports: deploy/python-base.sh builds one from this machine's Python, or,
# where a registry is reachable, FROM python:3.12-slim with pip install.
#
# Built by deploy/build-images.sh when PYTHON_BASE is set (or with
# --python, which builds the base first), from the context bin/image:
#
#   docker build -f deploy/python-worker.Dockerfile --build-arg BASE=pnpworker/python-base:local \
#                -t pnpworker/python-worker:dev bin/image
ARG BASE=pnpworker/python-base:local
FROM ${BASE}
COPY pnp /usr/local/bin/pnp
COPY pnpworker.py /opt/pnp/pnpworker.py
COPY runner_adapter.py /opt/pnp/worker/runner_adapter.py
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/pnp"]
CMD ["runner", "--algorithms", "none", "--worker", "python3 /opt/pnp/pnpworker.py /opt/pnp/worker/runner_adapter.py"]
