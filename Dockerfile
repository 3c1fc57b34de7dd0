FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
COPY config ./config
RUN pip install --no-cache-dir '.[postgres]' \
    && useradd --system --home /var/lib/aggregator aggregator \
    && mkdir -p /var/lib/aggregator && chown aggregator /var/lib/aggregator
USER aggregator
ENV AGGREGATOR_DATA_DIR=/var/lib/aggregator \
    AGGREGATOR_SERVER__HOST=0.0.0.0
EXPOSE 8080
ENTRYPOINT ["aggregator", "--config", "/app/config/aggregator.toml"]
CMD ["run"]
