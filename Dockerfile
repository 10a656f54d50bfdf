# crirt with its runtime dependencies and test tools (crictl, critest) on Debian bookworm.
# Run privileged with the host's cgroups: the image is a node runtime, not an app.
#   docker build -t crirt . && docker run --privileged --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup crirt
FROM golang:1.26-bookworm AS tools
RUN GOBIN=/out go install sigs.k8s.io/cri-tools/cmd/crictl@v1.36.0 \
 && GOBIN=/out go install github.com/onsi/ginkgo/v2/ginkgo@v2.28.1 \
 && mkdir /build && cd /build && go mod init critest-build \
 && go get -t sigs.k8s.io/cri-tools/cmd/critest@v1.36.0 \
 && go test -c -o /out/critest sigs.k8s.io/cri-tools/cmd/critest

FROM python:3.11-slim-bookworm
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      runc crun containernetworking-plugins catatonit iptables iproute2 util-linux \
      docker-registry busybox-static skopeo umoci gcc libc6-dev curl ca-certificates file procps \
 && rm -rf /var/lib/apt/lists/*
COPY --from=tools /out/ /usr/local/bin/
WORKDIR /opt/crirt
COPY . .
RUN pip install --no-cache-dir -e '.[dev]' \
 && scripts/build-monitor.sh /usr/local/libexec/crirt/crirt-monitor \
 && install -d /etc/crirt /etc/cni/net.d \
 && install -m 0644 deploy/crirt.conf /etc/crirt/crirt.conf \
 && install -m 0644 deploy/cni/10-crirt-bridge.conflist /etc/cni/net.d/ \
 && install -m 0644 deploy/crictl.yaml /etc/crictl.yaml
ENTRYPOINT ["python3", "-m", "crirt"]
CMD ["serve"]
