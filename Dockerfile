# prewarm: multi-stage build, non-root runtime, `prewarm serve` with the config mounted at /etc/prewarm.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY forecaster forecaster
COPY planner planner
COPY backtest backtest
COPY actuator actuator
COPY api api
COPY service service
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 prewarm \
    && mkdir -p /var/lib/prewarm /etc/prewarm \
    && chown 10001 /var/lib/prewarm
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config.example.yaml /etc/prewarm/config.example.yaml
USER 10001
WORKDIR /var/lib/prewarm
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["prewarm", "serve"]
CMD ["--config", "/etc/prewarm/config.yaml"]
