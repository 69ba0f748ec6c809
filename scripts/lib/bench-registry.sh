# Shared by scripts/bench-registry (Nacos v1 HTTP) and scripts/bench-registry-grpc
# (Nacos 2.x gRPC): finds rnacos, starts Berth's registry or rnacos on fixed loopback
# ports, waits for a port.
#
# The caller sets WORK (a scratch folder), PIDS (an array the exit trap kills) and BERTH
# (the berth binary). SERVER_PIN, an array such as (taskset -c 1), prefixes the server's
# command when set. start_berth and start_rnacos set SERVER_PID, SERVER_ADDR (HTTP) and
# SERVER_GRPC (the Nacos gRPC port: HTTP port + 1000 on both).

# find_rnacos: sets RNACOS to an rnacos binary (RNACOS=/path picks one), or "" with a
# warning when there is none.
find_rnacos() {
    RNACOS=${RNACOS:-$(command -v rnacos || echo target/bench-tools/bin/rnacos)}
    if [[ -x "$RNACOS" ]]; then
        RNACOS=$(realpath "$RNACOS")
    else
        echo "WARNING: rnacos not found (cargo install rnacos --locked --root target/bench-tools, or set RNACOS);" >&2
        echo "         measuring Berth alone: no ratios." >&2
        RNACOS=""
    fi
}

# snapshot_binaries PATH...: copies the freshly built binaries into $WORK/bin and points
# BERTH and LOAD there: target/ may be shared with other builds, which could replace
# target/release/berth in the middle of a run.
snapshot_binaries() {
    mkdir -p "$WORK/bin"
    cp "$BERTH" "$WORK/bin/berth"
    cp "$LOAD" "$WORK/bin/load"
    BERTH=$WORK/bin/berth
    LOAD=$WORK/bin/load
}

wait_port() {
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing listens on 127.0.0.1:$1" >&2
    return 1
}

# port_free PORT: fails, naming the port, when something already listens there (a server
# left over from another run would answer in place of the one just started).
port_free() {
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "127.0.0.1:$1 is already taken: stop what listens there (ss -ltnp)" >&2
        return 1
    fi
}

# started: the server just started must be the one listening (it did not exit).
started() {
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "the server exited at start (see its log in $WORK)" >&2
        return 1
    fi
}

# stop_server: SIGTERM, up to 20 s to finish, then SIGKILL.
stop_server() {
    kill "$SERVER_PID" 2>/dev/null || return 0
    for _ in $(seq 1 200); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -9 "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
}

start_berth() {
    port_free 18848
    port_free 19848
    rm -rf "$WORK/berth"
    ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$BERTH" registry --listen 127.0.0.1:18848 --grpc-listen 127.0.0.1:19848 \
        --data-dir "$WORK/berth" >"$WORK/berth.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_ADDR=127.0.0.1:18848
    SERVER_GRPC=127.0.0.1:19848
    wait_port 18848
    wait_port 19848
    started
}

start_rnacos() {
    port_free 28848
    port_free 29848
    rm -rf "$WORK/rnacos"
    mkdir -p "$WORK/rnacos"
    (cd "$WORK/rnacos" && RNACOS_HTTP_PORT=28848 RNACOS_GRPC_PORT=29848 RNACOS_HTTP_CONSOLE_PORT=0 \
        RNACOS_CONFIG_DB_DIR="$WORK/rnacos/db" RNACOS_RAFT_NODE_ADDR=127.0.0.1:29848 \
        exec ${SERVER_PIN[@]+"${SERVER_PIN[@]}"} "$RNACOS" >"$WORK/rnacos.log" 2>&1) &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_ADDR=127.0.0.1:28848
    SERVER_GRPC=127.0.0.1:29848
    wait_port 28848
    wait_port 29848
    started
}
