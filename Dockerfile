# One image for the operator, the webhook and the agent runner (`agentmatrix <command>`).
# Build where a container engine is available:  docker build -t agentmatrix:0.1.0 .
# Without one, `agentmatrix image build` packs the same packages (requirements.lock and this
# checkout's wheel) from a root filesystem and loads them into the real node.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY operator ./operator
COPY webhook ./webhook
COPY agent_runner ./agent_runner
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

# kubectl for the agent runner's commands, at the version the project is tested against.
FROM registry.k8s.io/kubectl:v1.36.3 AS kubectl

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="agentmatrix" \
      org.opencontainers.image.description="Measure and guard self-replication of LLM agents on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=kubectl /bin/kubectl /usr/local/bin/kubectl
COPY requirements.lock /tmp/requirements.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-deps --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
 && pip install --no-cache-dir --no-deps --no-index --find-links /wheels agentmatrix==0.1.0 \
 && rm -rf /wheels /tmp/requirements.lock
ENV PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["agentmatrix"]
CMD ["--help"]
