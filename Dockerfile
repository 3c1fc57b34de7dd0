# The aggregator's image: the package and its PostgreSQL driver, run as an unprivileged user.
# compose.yaml builds it; alone: docker build -t aggregator . && docker run -p 8080:8080 aggregator
# Its settings are config/examples/production.toml (real outlets); for the demo outlets
# instead: docker run -p 8080:8080 -v "$PWD/config/aggregator.toml:/etc/aggregator/aggregator.toml:ro" aggregator
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
# `aggregator eval` scores the clusterer on labelled files; the service never imports it
COPY aggregator_eval ./aggregator_eval
RUN pip install ".[postgres]" && rm -rf /src

COPY config/examples/production.toml /etc/aggregator/aggregator.toml
RUN useradd --system --create-home --home-dir /var/lib/aggregator aggregator
USER aggregator
WORKDIR /var/lib/aggregator
ENV AGGREGATOR_CONFIG=/etc/aggregator/aggregator.toml \
    AGGREGATOR_DATA_DIR=/var/lib/aggregator \
    AGGREGATOR_SERVER__HOST=0.0.0.0

EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=3)"
CMD ["aggregator", "run"]
