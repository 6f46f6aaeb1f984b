#!/usr/bin/env bash
# Restart cost of the real binary: time from exec to the first 200 from /healthz (webhooks are
# accepted from then on, before Rocket.Chat is reached), and from SIGTERM to exit, five times on
# the same store. Rocket.Chat and Graph point at a closed port, as after a reboot before
# Rocket.Chat is up. Usage: bash benches/restart.sh [BINARY] (default target/release/omni-gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/omni-gateway}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
port=18089
printf 'secret' >"$dir/secret"
cat >"$dir/bot.toml" <<TOML
[rocketchat]
url = "http://127.0.0.1:9"
username = "facebook.bot"
password_file = "secret"
[facebook]
app_id = "1234"
app_secret_file = "secret"
verify_token_file = "secret"
graph_url = "http://127.0.0.1:9"
[http]
listen = "127.0.0.1:$port"
public_url = "https://fb-gateway.example.com"
[store]
path = "data"
TOML
now_ms() { echo $(($(date +%s%N) / 1000000)); }
for run in 1 2 3 4 5; do
    start=$(now_ms)
    RUST_LOG=warn "$bin" run --config "$dir/bot.toml" 2>>"$dir/log" &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; do sleep 0.002; done
    up=$(now_ms)
    kill -TERM "$pid"
    wait "$pid" || true
    down=$(now_ms)
    echo "run $run: /healthz 200 after $((up - start)) ms; SIGTERM to exit $((down - up)) ms"
done
