# binance-futures-exporter container image.
#
#   docker build -t binance-futures-exporter .
#   (podman/buildah: add --format docker, or the OCI format drops the HEALTHCHECK)
#   docker run --read-only -p 127.0.0.1:10317:10317 \
#     -v "$PWD/config.yaml:/etc/binance-futures-exporter/config.yaml:ro" \
#     -v "$PWD/secrets:/run/secrets:ro" binance-futures-exporter
#
# No secrets are baked in: the config file and the key files are mounted at
# run time (see README.md, "Running in production").

# ---- build: a wheel of this repository and of its dependencies, then a venv
FROM python:3.12-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY exporter ./exporter

# Wheels for the project and every dependency at the versions constraints.txt
# pins (the lock file CI uses too), then an offline install of exactly those
# wheels into a venv without pip or setuptools (dead weight at run time, and
# scanner noise); pip compiles the .pyc files here, so the read-only runtime
# never needs to write them.
RUN pip wheel . -c constraints.txt -w /wheels \
    && python -m venv --without-pip /opt/venv \
    && pip --python /opt/venv/bin/python install --no-index --find-links=/wheels \
       /wheels/binance_futures_exporter-*.whl \
    && /opt/venv/bin/binance-futures-exporter --version

# ---- runtime: the same Python base, the venv, nothing else
FROM python:3.12-slim-bookworm

LABEL org.opencontainers.image.title="binance-futures-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Binance USDⓈ-M Futures accounts" \
      org.opencontainers.image.source="https://github.com/binance-futures-exporter/binance-futures-exporter" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.2.0"

# --demo listens on loopback by default so that trying it on a host opens no
# public port; in a container the network namespace is the boundary, and the
# published port must reach it.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BINANCE_FUTURES_EXPORTER_DEMO_LISTEN=:10317

COPY --from=build /opt/venv /opt/venv

# Numeric non-root user (no /etc/passwd entry needed, works with
# runAsNonRoot in Kubernetes). Mounted secret files must be readable by it.
USER 65532:65532

EXPOSE 10317

# Exec form, no shell: Python's urllib against the health endpoint. Assumes
# the default port and plain HTTP; override it when listening elsewhere or
# serving TLS via --web.config.file.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:10317/healthz', timeout=4)"]

ENTRYPOINT ["binance-futures-exporter"]
CMD ["--config", "/etc/binance-futures-exporter/config.yaml"]
