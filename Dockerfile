# One image for the operator, the webhook and the agent runner (`agentmatrix <command>`).
# Build where a container engine is available:  docker build -t agentmatrix:0.1.0 .

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY operator ./operator
COPY webhook ./webhook
COPY agent_runner ./agent_runner
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# kubectl for the agent runner's commands, at the version the project is tested against.
FROM registry.k8s.io/kubectl:v1.36.3 AS kubectl

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="agentmatrix" \
      org.opencontainers.image.description="Measure and guard self-replication of LLM agents on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=kubectl /bin/kubectl /usr/local/bin/kubectl
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels agentmatrix==0.1.0 && rm -rf /wheels
ENV PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["agentmatrix"]
CMD ["--help"]
