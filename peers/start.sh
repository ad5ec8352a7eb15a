#!/usr/bin/env bash
# Installs what is missing and starts Breakwater's third-party peers on
# 127.0.0.1, each on a free port:
#   - httpbin 0.10 (PyPI) under gunicorn, from a venv (default target/peers-venv);
#   - nginx (Debian package) with a config generated into peers/.run/nginx:
#     port A: static files (an ~8 MiB JSON file, gzip on) and /moved -> 308 to B,
#     port B: /landing -> {"landed":true},
#     port C: TLS (own throwaway CA + leaf for 127.0.0.1/localhost), same as A;
#   - peers/echo_wsgi.py under the same gunicorn (as .ci/run serves it today),
#     so BREAKWATER_PEER_GUNICORN is in the env file too;
#   - tinyproxy (Debian's tinyproxy-bin), two instances in the foreground with
#     configs in peers/.run/tinyproxy: an open HTTP proxy and one that wants
#     Basic auth (bw-user); CONNECT is allowed to any port;
#   - dante (Debian's dante-server), two danted instances in the foreground
#     with configs in peers/.run/dante: SOCKS5 without auth, and SOCKS5 with
#     RFC 1929 user/password, checked by dante against the system password
#     database (so, as root, this script creates the system user bw-socks
#     once, if it does not exist). Both only relay 127.0.0.0/8 -> 127.0.0.0/8.
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
# A program on PATH, or at the path Debian installs it to (sbin may be off a
# non-root PATH); prints nothing if neither.
find_bin() { # name debian-path
  command -v "$1" 2>/dev/null || { [ -x "$2" ] && printf '%s\n' "$2"; } || true
}
missing=()
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
nginx_bin=$(find_bin nginx /usr/sbin/nginx)
[ -n "$nginx_bin" ] || missing+=(nginx)
# tinyproxy-bin is the binary alone: the "tinyproxy" package adds an init
# script and unit that start a system tinyproxy (all interfaces, port 8888)
# wherever no policy-rc.d forbids it, plus logrotate and adduser.
tinyproxy_bin=$(find_bin tinyproxy /usr/bin/tinyproxy)
[ -n "$tinyproxy_bin" ] || missing+=(tinyproxy-bin)
# dante-server's own service does not start: its /etc/danted.conf has no
# internal/external address (its postinst says so and carries on).
danted_bin=$(find_bin danted /usr/sbin/danted)
[ -n "$danted_bin" ] || missing+=(dante-server)
command -v "$python" >/dev/null 2>&1 || { python=python3; missing+=(python3 python3-venv); }
if [ "${#missing[@]}" -gt 0 ]; then
  apt_install "${missing[@]}"
fi
[ -n "$nginx_bin" ] || nginx_bin=/usr/sbin/nginx
[ -x "$nginx_bin" ] || die "nginx not found after install"
[ -n "$tinyproxy_bin" ] || tinyproxy_bin=/usr/bin/tinyproxy
[ -x "$tinyproxy_bin" ] || die "tinyproxy not found after install"
[ -n "$danted_bin" ] || danted_bin=/usr/sbin/danted
[ -x "$danted_bin" ] || die "danted not found after install"

# The proxies' test credentials. Both passwords use only RFC 3986 unreserved
# characters, so the URLs in the env file carry them as they are (a test of
# percent-decoding can write e.g. "%2E" for "."). tinyproxy's BasicAuth takes
# only [-A-Za-z0-9._] in the user and password.
http_proxy_user=bw-user
http_proxy_pass=bw-Pass.w0rd_42
socks_user=bw-socks
socks_pass=bw-Socks.pass_42
# dante's "username" method checks the password with getpwnam/getspnam and
# crypt, i.e. against /etc/passwd and /etc/shadow: it needs a system user
# (no home, no login shell) and root to read the shadow file. The user is made
# once and left in place; an existing one is never changed.
socks_auth=
if [ "$(id -u)" -eq 0 ]; then
  socks_auth=1
  if ! getent passwd "$socks_user" >/dev/null; then
    log "creating system user $socks_user (no home, no login shell) for dante's username method"
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --no-user-group --gid nogroup --comment "Breakwater peers SOCKS5 test user" "$socks_user"
    printf '%s:%s\n' "$socks_user" "$socks_pass" | chpasswd
  fi
else
  log "warning: not root: dante with user/password auth is not started (BREAKWATER_SOCKS5_AUTH is left out)"
fi

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
mkdir -p "$run/nginx/www" "$run/nginx/tmp" "$run/nginx/tls" "$run/tinyproxy" "$run/dante"
: >"$run/pids"

# Nine distinct free ports, chosen while all nine sockets are held open.
read -r port_httpbin port_a port_b port_tls port_echo \
  port_tp_open port_tp_auth port_socks_open port_socks_auth < <("$venv/bin/python" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(9)]
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

# ---------------------------------------------------------------- tinyproxy config
# One file per instance; "tinyproxy -d" stays in the foreground and logs to the
# LogFile. No ConnectPort line at all: then CONNECT may go to any port (the
# packaged config lists 443 and 563; "ConnectPort 0" would disable CONNECT).
# As root, "User <self>" keeps it as root, as nginx's workers are, and avoids
# its warning; it never listens anywhere but 127.0.0.1.
tp="$run/tinyproxy"
tinyproxy_conf() { # name port [extra lines...]
  local name=$1 port=$2
  shift 2
  {
    printf '# Generated by peers/start.sh; nothing here touches /etc/tinyproxy.\n'
    [ "$(id -u)" -eq 0 ] && printf 'User %s\n' "$(id -un)"
    cat <<EOF
Port $port
Listen 127.0.0.1
Allow 127.0.0.0/8
Timeout 120
MaxClients 100
PidFile "$tp/$name.pid"
LogFile "$tp/$name.log"
# Info is the most verbose level of a release build: per request the client's
# connect, the request line, the upstream connection and its close. Headers
# and the authenticated user are never logged.
LogLevel Info
# No Via and no X-Tinyproxy added to forwarded requests.
DisableViaHeader Yes
XTinyproxy No
EOF
    printf '%s\n' "$@"
  } >"$tp/$name.conf"
}
tinyproxy_conf open "$port_tp_open"
tinyproxy_conf auth "$port_tp_auth" \
  "# Requests without Proxy-Authorization get 407; with wrong credentials, 401." \
  "BasicAuth $http_proxy_user $http_proxy_pass"

# ---------------------------------------------------------------- dante config
# One file per instance; danted without -D stays in the foreground. A mother
# process forks its negotiate/request/io children; SIGTERM to the mother ends
# them all. It accepts on 127.0.0.1 only and connects out from 127.0.0.1 only,
# and only to 127.0.0.0/8: a hostname (socks5h) is resolved by dante itself
# and then checked against that rule, so "localhost" works.
dd="$run/dante"
dante_conf() { # name port socksmethod [socks-rule lines...]
  local name=$1 port=$2 method=$3
  shift 3
  {
    cat <<EOF
# Generated by peers/start.sh; nothing here touches /etc/danted.conf.
logoutput: $dd/$name.log
internal: 127.0.0.1 port = $port
external: 127.0.0.1
clientmethod: none
socksmethod: $method
EOF
    # The privileged id verifies passwords (reads /etc/shadow); the rest of
    # the time dante runs as the unprivileged one.
    [ "$(id -u)" -eq 0 ] && printf '%s\n' "user.privileged: root" "user.unprivileged: nobody"
    cat <<EOF
timeout.negotiate: 30
client pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
    log: error
}
client block {
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: connect error
}
socks pass {
    from: 127.0.0.0/8 to: 127.0.0.0/8
    command: connect
EOF
    printf '    %s\n' "$@"
    cat <<EOF
    log: connect disconnect error
}
socks block {
    from: 0.0.0.0/0 to: 0.0.0.0/0
    log: connect error
}
EOF
  } >"$dd/$name.conf"
  "$danted_bin" -V -f "$dd/$name.conf" >>"$dd/$name.stderr.log" 2>&1 ||
    { cat "$dd/$name.stderr.log" >&2; die "danted rejects $dd/$name.conf"; }
}
dante_conf open "$port_socks_open" none "socksmethod: none"
if [ -n "$socks_auth" ]; then
  dante_conf auth "$port_socks_auth" username "socksmethod: username" "user: $socks_user"
fi

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

"$tinyproxy_bin" -d -c "$tp/open.conf" </dev/null >>"$tp/open.stderr.log" 2>&1 &
tp_open_pid=$!
printf 'tinyproxy-open %s\n' "$tp_open_pid" >>"$run/pids"
"$tinyproxy_bin" -d -c "$tp/auth.conf" </dev/null >>"$tp/auth.stderr.log" 2>&1 &
tp_auth_pid=$!
printf 'tinyproxy-auth %s\n' "$tp_auth_pid" >>"$run/pids"

"$danted_bin" -f "$dd/open.conf" -p "$dd/open.pid" </dev/null >>"$dd/open.stderr.log" 2>&1 &
socks_open_pid=$!
printf 'dante-open %s\n' "$socks_open_pid" >>"$run/pids"
socks_auth_pid=
if [ -n "$socks_auth" ]; then
  "$danted_bin" -f "$dd/auth.conf" -p "$dd/auth.pid" </dev/null >>"$dd/auth.stderr.log" 2>&1 &
  socks_auth_pid=$!
  printf 'dante-auth %s\n' "$socks_auth_pid" >>"$run/pids"
fi

# Bounded wait: at most 150 tries x (0.1 s sleep + <=1 s request). With
# auth_log set (for the call), a line in it saying a password was refused ends
# the wait at once.
wait_for() { # name pid url [curl args...]
  local name=$1 pid=$2 url=$3
  shift 3
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { log "$name (pid $pid) exited; its log:"; tail -n 30 "$run"/*.log "$ngx"/*.log "$tp"/*.log "$dd"/*.log >&2 || true; "$here/stop.sh" || true; exit 1; }
    if curl -fsS -o /dev/null --max-time 1 "$@" "$url" 2>/dev/null; then
      return 0
    fi
    if [ -n "${auth_log:-}" ] && grep -q 'password authentication failed' "$auth_log" 2>/dev/null; then
      log "$name refused the password of $socks_user: the system user existed before with another password;"
      log "set it with: echo '$socks_user:$socks_pass' | chpasswd  (or remove the user and rerun)"
      "$here/stop.sh" || true
      exit 1
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
# The proxies are ready when a request through them reaches nginx's port B.
http_proxy_open=http://127.0.0.1:$port_tp_open
http_proxy_auth=http://$http_proxy_user:$http_proxy_pass@127.0.0.1:$port_tp_auth
socks_open=socks5://127.0.0.1:$port_socks_open
socks_auth_url=socks5://$socks_user:$socks_pass@127.0.0.1:$port_socks_auth
landing="http://127.0.0.1:$port_b/landing"
wait_for tinyproxy-open "$tp_open_pid" "$landing" --proxy "$http_proxy_open"
wait_for tinyproxy-auth "$tp_auth_pid" "$landing" --proxy "$http_proxy_auth"
wait_for dante-open "$socks_open_pid" "$landing" --proxy "$socks_open"
if [ -n "$socks_auth" ]; then
  auth_log="$dd/auth.log" wait_for dante-auth "$socks_auth_pid" "$landing" --proxy "$socks_auth_url"
fi

httpbin_version=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("httpbin"))')
nginx_version=$("$nginx_bin" -v 2>&1 | sed 's|.*/||')
tinyproxy_version=$("$tinyproxy_bin" -v | awk '{print $2}')
dante_version=$("$danted_bin" -v | sed -n 's/^Dante v\([0-9][0-9.]*[0-9]\).*/\1/p')
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
BREAKWATER_HTTP_PROXY=$http_proxy_open
BREAKWATER_HTTP_PROXY_AUTH=$http_proxy_auth
BREAKWATER_HTTP_PROXY_LOG=$tp/auth.log
BREAKWATER_TINYPROXY_VERSION=$tinyproxy_version
BREAKWATER_SOCKS5=$socks_open
EOF
[ -z "$socks_auth" ] || printf 'BREAKWATER_SOCKS5_AUTH=%s\n' "$socks_auth_url" >>"$run/env"
printf 'BREAKWATER_DANTE_VERSION=%s\n' "$dante_version" >>"$run/env"
log "httpbin $httpbin_version (pid $httpbin_pid), nginx $nginx_version (pid $nginx_pid), echo (pid $echo_pid),"
log "tinyproxy $tinyproxy_version (pids $tp_open_pid, $tp_auth_pid), dante $dante_version (pids $socks_open_pid${socks_auth_pid:+, $socks_auth_pid}) are up; env in $run/env:"
cat "$run/env"
