# `start_registry [NAME]`: Debian's docker-registry on a free loopback port, storing in
# $WORK/NAME (default registry); sets REG_PID and PORT. It reads any REGISTRY_* variable as
# configuration, so it gets an empty environment.
start_registry() {
  local name=${1:-registry}
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$WORK/$name.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/$name
http:
  addr: 127.0.0.1:$PORT
YML
  env -i /usr/bin/docker-registry serve "$WORK/$name.yml" >/dev/null 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "docker-registry did not start" >&2
  return 1
}
