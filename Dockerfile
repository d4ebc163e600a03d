# One image for every role of chief-of-state on NATS JetStream, assembled from static binaries built on
# the host (scripts/build-dist.sh; `make image` does both), so no compiler runs in the image build:
#
#   scripts/build-dist.sh
#   docker build -t cosnats:dev .                         # on gcr.io/distroless/static-debian12:nonroot
#   docker build --build-arg BASE=scratch -t cosnats:dev .  # where no image can be pulled
#
# The role is the command: /usr/local/bin/gateway (the default), worker or projector; cosprobe is the
# health probe for orchestrators that exec one (the image has no shell); cosctl the operator CLI
# (`kubectl exec … -- cosctl readside status`); bankhandler, bankreadside and
# bankclient are the bank-account example. No HEALTHCHECK: probes belong to the orchestrator.
ARG BASE=gcr.io/distroless/static-debian12:nonroot
FROM ${BASE}

# TARGETARCH is set by BuildKit (docker buildx --platform); the classic builder needs --build-arg.
ARG TARGETARCH
COPY dist/linux_${TARGETARCH:-amd64}/gateway \
     dist/linux_${TARGETARCH:-amd64}/worker \
     dist/linux_${TARGETARCH:-amd64}/projector \
     dist/linux_${TARGETARCH:-amd64}/cosprobe \
     dist/linux_${TARGETARCH:-amd64}/cosctl \
     dist/linux_${TARGETARCH:-amd64}/bankhandler \
     dist/linux_${TARGETARCH:-amd64}/bankreadside \
     dist/linux_${TARGETARCH:-amd64}/bankclient \
     /usr/local/bin/
# The single-process mode (no COS_NATS_URL) stores its embedded NATS here; an empty directory owned by
# the runtime user, so that a volume mounted on it is writable without root (scratch has no
# /home/nonroot to fall back on).
COPY --chown=65532:65532 dist/linux_${TARGETARCH:-amd64}/empty/ /var/lib/cos/
ENV PATH=/usr/local/bin:/usr/bin:/bin \
    COS_DATA_DIR=/var/lib/cos

# Numeric, so that it needs no /etc/passwd (scratch) and Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# gRPC (gateway), /metrics + /healthz + /readyz (every role)
EXPOSE 9000 9102
CMD ["/usr/local/bin/gateway"]

# Last, so that a rebuild with new labels reuses the layers above.
ARG VERSION=devel
ARG REVISION=unknown
ARG CREATED=""
ARG LICENSES=NOASSERTION
LABEL org.opencontainers.image.title="cosnats" \
      org.opencontainers.image.description="chief-of-state on NATS JetStream: gateway, worker and projector (select by command)" \
      org.opencontainers.image.source="https://github.com/cosnats/cosnats" \
      org.opencontainers.image.licenses="${LICENSES}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
