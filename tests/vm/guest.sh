#!/bin/bash
# Runs inside the VM as the oneshot unit tracer-vm.service (systemd is PID 1), with the
# tracer and the test binaries that `cargo xtask vm` packed under /opt/tracer. Every
# step prints its output to the serial console between markers the host parses:
#   @@tracer-vm step NAME           a step starts
#   @@tracer-vm result NAME RC SECS a step ended with exit code RC
#   @@tracer-vm done                all steps ran (then the VM powers off)
# The host fails the run on any non-zero RC, a missing result or no `done`.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export TRACER_BIN=/opt/tracer/bin/tracer TRACER_VM=1 RUST_BACKTRACE=1 NO_COLOR=1
cd /opt/tracer || exit 1
# shellcheck disable=SC1091
. /opt/tracer/steps.env   # WORKSPACE (the clone the tests were built in) and STEPS ("name|command" lines), written by the host

step() {
    local name=$1; shift
    echo "@@tracer-vm step $name"
    local t0=$SECONDS
    ( eval "$*" ) 2>&1
    local rc=$?
    echo "@@tracer-vm result $name $rc $((SECONDS - t0))"
}

echo "@@tracer-vm boot kernel=$(uname -r) init=$(readlink /proc/1/exe) systemd=$(systemctl --version | head -1 | cut -d' ' -f2) uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "@@tracer-vm cgroup2 controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
# The tests enter network namespaces and make veths: the cloud kernel builds veth as a module.
modprobe veth 2>&1 || true
# The test files at the path the test binaries were built with (the host's clone).
mkdir -p "$WORKSPACE" && cp -a /opt/tracer/ws/tests "$WORKSPACE/"
# cgroup_no_v1=all binds no controller to v1; a named v1 hierarchy still mounts, for the
# hooks tests' v1 case (cgroupfs v1 magic, a hierarchy id of its own).
mkdir -p /run/tracer-v1 && mount -t cgroup -o none,name=tracer-vm cgroup /run/tracer-v1 2>&1
while IFS= read -r line; do
    [ -n "$line" ] || continue
    step "${line%%|*}" "${line#*|}"
done <<<"$STEPS"
echo "@@tracer-vm done"
sync
systemctl poweroff -ff
