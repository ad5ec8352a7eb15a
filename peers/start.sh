#!/usr/bin/env bash
# Installs what is missing and starts Breakwater's third-party peers on
# 127.0.0.1, each on a free port:
#   - httpbin 0.10 (PyPI) under gunicorn, from a venv (default target/peers-venv);
#   - nginx (Debian package) with a config generated into peers/.run/nginx:
#     port A: static files (an ~8 MiB JSON file, gzip on) and /moved -> 308 to B,
#     port B: /landing -> {"landed":true},
#     port C: TLS (own throwaway CA + leaf for 127.0.0.1/localhost), same as A;
#   - peers/echo_wsgi.py under the same gunicorn (as .ci/run serves it today),
#     so BREAKWATER_PEER_GUNICORN is in the env file too.
# Writes peers/.run/env (KEY=VALUE lines) and peers/.run/pids ("name pid"
# lines, read by peers/stop.sh). Waits for each peer with bounded retries.
#
# Environment knobs (all optional):
#   BREAKWATER_PEERS_VENV   where the httpbin venv lives [<repo>/target/peers-venv]
#   BREAKWATER_PEERS_PYTHON the Python that creates the venv [python3]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
run="$here/.run"
venv="${BREAKWATER_PEERS_VENV:-$repo/target/peers-venv}"
python="${BREAKWATER_PEERS_PYTHON:-python3}"
reqs="$here/httpbin-requirements.txt"

log() { printf 'peers: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# A peer left running by an earlier start: stop it first (by its recorded PIDs).
if [ -s "$run/pids" ]; then
  log "stopping the peers recorded in $run/pids first"
  "$here/stop.sh"
fi

apt_updated=
apt_install() {
  [ "$(id -u)" -eq 0 ] || die "need root to apt-get install $*; install it by hand and rerun"
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# ---------------------------------------------------------------- install
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
nginx_bin=$(command -v nginx 2>/dev/null || true)
[ -n "$nginx_bin" ] || { [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx; } || true
[ -n "$nginx_bin" ] || missing+=(nginx)
command -v "$python" >/dev/null 2>&1 || { python=python3; missing+=(python3 python3-venv); }
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
[ -n "$nginx_bin" ] || nginx_bin=/usr/sbin/nginx
[ -x "$nginx_bin" ] || die "nginx not found after install"

# The venv is (re)built when it is missing or the pinned requirements changed.
reqs_sum=$(sha256sum "$reqs" | cut -d' ' -f1)
if [ ! -x "$venv/bin/gunicorn" ] || [ "$(cat "$venv/.breakwater-reqs" 2>/dev/null || true)" != "$reqs_sum" ]; then
  log "creating venv $venv for httpbin"
  rm -rf "$venv"
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    # Debian's own python3 has no ensurepip without python3-venv.
    rm -rf "$venv"
    apt_install python3-venv
    python=/usr/bin/python3
    "$python" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
  printf '%s\n' "$reqs_sum" >"$venv/.breakwater-reqs"
fi

# ---------------------------------------------------------------- run dir
rm -rf "$run"
mkdir -p "$run/nginx/www" "$run/nginx/tmp" "$run/nginx/tls"
: >"$run/pids"

# Five distinct free ports, chosen while all five sockets are held open.
read -r port_httpbin port_a port_b port_tls port_echo < <("$venv/bin/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)

# ~8 MiB of deterministic, compressible JSON (same bytes on every machine).
"$venv/bin/python" - "$run/nginx/www/big.json" <<'EOF'
import json, sys
target = 8 * 1024 * 1024
words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
with open(sys.argv[1], "w", newline="\n") as out:
    out.write("[\n")
    size, i = 2, 0
    while size < target:
        rec = json.dumps({
            "id": i,
            "name": "item-%07d" % i,
            "tags": words[i % 5:i % 5 + 3],
            "value": (i * 2654435761) % 1000003,
            "note": "breakwater peer static payload",
        }, separators=(",", ":"))
        line = ("," if i else "") + rec + "\n"
        out.write(line)
        size += len(line)
        i += 1
    out.write("]\n")
EOF
big_len=$(wc -c <"$run/nginx/www/big.json" | tr -d ' ')
big_sha=$(sha256sum "$run/nginx/www/big.json" | cut -d' ' -f1)
printf 'breakwater nginx peer\n' >"$run/nginx/www/index.txt"

# TLS: a throwaway CA and a leaf for 127.0.0.1/localhost signed by it (rustls
# wants a CA as trust anchor, not a self-signed leaf). P-256 keys: fast.
tls="$run/nginx/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=Breakwater peers test CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
  "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >"$tls/server.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 7 -extfile "$tls/server.ext" -out "$tls/server.pem" 2>/dev/null

# ---------------------------------------------------------------- nginx config
ngx="$run/nginx"
user_line=
# As root the master hands work to "nobody", who may not be able to read the
# checkout (e.g. under /root): keep the workers as the invoking user.
[ "$(id -u)" -eq 0 ] && user_line="user $(id -un) $(id -gn);"
cat >"$ngx/nginx.conf" <<EOF
# Generated by peers/start.sh; nothing here touches /etc/nginx.
$user_line
daemon off;
worker_processes 1;
pid $ngx/nginx.pid;
error_log $ngx/error.log notice;
events { worker_connections 256; }
http {
    types {
        application/json json;
        text/plain txt;
        text/html html;
    }
    default_type application/octet-stream;
    access_log $ngx/access.log;
    client_body_temp_path $ngx/tmp/client_body;
    proxy_temp_path $ngx/tmp/proxy;
    fastcgi_temp_path $ngx/tmp/fastcgi;
    uwsgi_temp_path $ngx/tmp/uwsgi;
    scgi_temp_path $ngx/tmp/scgi;
    sendfile on;
    keepalive_timeout 30s;

    gzip on;
    gzip_types *;
    gzip_min_length 1;
    gzip_proxied any;
    gzip_vary on;

    # Port A: static files, and a cross-port permanent redirect.
    server {
        listen 127.0.0.1:$port_a;
        root $ngx/www;
        location = /moved { return 308 http://127.0.0.1:$port_b/landing; }
    }
    # Port B: where /moved lands.
    server {
        listen 127.0.0.1:$port_b;
        location = /landing {
            default_type application/json;
            return 200 '{"landed":true}';
        }
    }
    # Port C: TLS, same content as A.
    server {
        listen 127.0.0.1:$port_tls ssl;
        ssl_certificate $tls/server.pem;
        ssl_certificate_key $tls/server.key;
        root $ngx/www;
        location = /moved { return 308 http://127.0.0.1:$port_b/landing; }
    }
}
EOF
# -e: the compiled-in error log (/var/log/nginx) is never opened.
"$nginx_bin" -t -q -p "$ngx/" -e "$ngx/error.log" -c "$ngx/nginx.conf"

# ---------------------------------------------------------------- start
"$nginx_bin" -p "$ngx/" -e "$ngx/error.log" -c "$ngx/nginx.conf" \
  </dev/null >>"$ngx/stdout.log" 2>&1 &
nginx_pid=$!
printf 'nginx %s\n' "$nginx_pid" >>"$run/pids"

# gthread workers: keep-alive and a few requests at once (e.g. /delay/N).
"$venv/bin/gunicorn" --bind "127.0.0.1:$port_httpbin" --workers 2 --threads 4 --no-control-socket \
  --chdir "$run" --access-logfile "$run/httpbin.access.log" \
  httpbin:app </dev/null >>"$run/httpbin.log" 2>&1 &
httpbin_pid=$!
printf 'httpbin %s\n' "$httpbin_pid" >>"$run/pids"

# The echo app of adapter-tokio/tests/peers.rs, as .ci/run runs it.
"$venv/bin/gunicorn" --bind "127.0.0.1:$port_echo" --workers 1 --no-control-socket \
  --chdir "$here" echo_wsgi:app </dev/null >>"$run/echo.log" 2>&1 &
echo_pid=$!
printf 'echo %s\n' "$echo_pid" >>"$run/pids"

# Bounded wait: at most 150 tries x (0.1 s sleep + <=1 s request).
wait_for() { # name pid url [curl args...]
  local name=$1 pid=$2 url=$3
  shift 3
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { log "$name (pid $pid) exited; its log:"; tail -n 30 "$run"/*.log "$ngx"/*.log >&2 || true; "$here/stop.sh" || true; exit 1; }
    if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  log "$name did not answer $url in time"
  "$here/stop.sh" || true
  exit 1
}
wait_for nginx "$nginx_pid" "http://127.0.0.1:$port_a/index.txt"
wait_for nginx-other "$nginx_pid" "http://127.0.0.1:$port_b/landing"
wait_for nginx-tls "$nginx_pid" "https://127.0.0.1:$port_tls/index.txt" --cacert "$tls/ca.pem"
wait_for httpbin "$httpbin_pid" "http://127.0.0.1:$port_httpbin/get"
wait_for echo "$echo_pid" "http://127.0.0.1:$port_echo/"

httpbin_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("httpbin"))')
nginx_version=$("$nginx_bin" -v 2>&1 | sed 's|.*/||')
cat >"$run/env" <<EOF
BREAKWATER_HTTPBIN=http://127.0.0.1:$port_httpbin
BREAKWATER_HTTPBIN_VERSION=$httpbin_version
BREAKWATER_NGINX=http://127.0.0.1:$port_a
BREAKWATER_NGINX_OTHER=http://127.0.0.1:$port_b
BREAKWATER_NGINX_TLS=https://127.0.0.1:$port_tls
BREAKWATER_NGINX_TLS_CA=$tls/ca.pem
BREAKWATER_NGINX_BIG_PATH=/big.json
BREAKWATER_NGINX_BIG_LEN=$big_len
BREAKWATER_NGINX_BIG_SHA256=$big_sha
BREAKWATER_NGINX_VERSION=$nginx_version
BREAKWATER_PEER_GUNICORN=http://127.0.0.1:$port_echo
EOF
log "httpbin $httpbin_version (pid $httpbin_pid), nginx $nginx_version (pid $nginx_pid), echo (pid $echo_pid) are up; env in $run/env:"
cat "$run/env"
