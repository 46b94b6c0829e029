#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the SLURM tests (issue 8). Needs root; no systemd.
#
#   tests/slurm/cluster.sh start    install the Debian packages if missing (slurmctld, slurmd, slurm-client,
#                                   munge), write /etc/slurm/slurm.conf for this host, start munged,
#                                   slurmctld and slurmd, wait until the node is idle (exit 1 if it is not)
#   tests/slurm/cluster.sh stop     stop the daemons this script started, by the PIDs in their pid files
#   tests/slurm/cluster.sh status   exit 0 when the node answers and is idle or allocated
#
# Settings (environment): SLURM_NODE_CPUS (CPUs the node advertises; default: nproc), SLURM_NODE_MEM_MB
# (default: 80% of MemTotal). Accounting is off, so status checks use squeue: MinJobAge keeps finished
# jobs visible to it for an hour. Memory is consumable (DefMemPerCPU), so a job without --mem cannot
# take the whole node. KillWait=1: a cancelled job's tasks get SIGKILL 1 s after SIGTERM (submitit's tasks
# ignore SIGTERM; with the default 30 s a cancelled tiny run would finish before it is killed). Job ids restart at 1 on a fresh state directory: never key anything on them.
set -euo pipefail

RUN=/run/slurm
STATE=/var/spool/slurmctld

log() { echo "[slurm-cluster] $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || { log "installing SLURM needs root (apt-get); run as root or install slurmctld slurmd slurm-client munge"; exit 1; }
    log "installing slurmctld slurmd slurm-client munge (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
    local node cpus mem
    node=$(hostname -s)
    cpus=${SLURM_NODE_CPUS:-$(nproc)}
    mem=${SLURM_NODE_MEM_MB:-$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.8}' /proc/meminfo)}
    mkdir -p /etc/slurm "$STATE" /var/spool/slurmd /var/log/slurm "$RUN"
    cat > /etc/slurm/slurm.conf <<EOF
# written by longvila tests/slurm/cluster.sh: one node, no accounting, no cgroups
ClusterName=longvila-ci
SlurmctldHost=${node}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=${STATE}
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=${RUN}/slurmctld.pid
SlurmdPidFile=${RUN}/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
DefMemPerCPU=1000
MailProg=/bin/true
KillWait=1
Waittime=0
InactiveLimit=0
NodeName=${node} CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
    mkdir -p /run/munge
    chown munge:munge /run/munge
    if [ ! -s /etc/munge/munge.key ]; then
        head -c 1024 /dev/urandom > /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key
        chmod 0400 /etc/munge/munge.key
    fi
    munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
    munge -n | unmunge >/dev/null
}

node_state() { sinfo -h -N -o %T 2>/dev/null | head -1 || true; }

start() {
    install_packages
    write_config
    start_munge
    pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
    pgrep -x slurmd >/dev/null || /usr/sbin/slurmd
    local state=""
    for _ in $(seq 1 120); do
        state=$(node_state)
        [ "$state" = idle ] && break
        sleep 0.5
    done
    if [ "$state" != idle ]; then
        log "the node did not become idle (state '${state}'); see /var/log/slurm/slurmctld.log and slurmd.log"
        exit 1
    fi
    log "up: $(sinfo -h -o '%P %D nodes, %c CPUs, %m MB, %T')"
}

stop_pid() {                             # TERM, wait up to 10 s, then KILL
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    local f
    for f in "$RUN/slurmd.pid" "$RUN/slurmctld.pid" /run/munge/munged.pid; do
        if [ -s "$f" ]; then
            stop_pid "$(cat "$f")"
            rm -f "$f"
        fi
    done
    log "stopped"
}

status() {
    local state
    state=$(node_state)
    case "$state" in
        idle|mixed|allocated) echo "$state" ;;
        *) echo "no SLURM node answering (state '${state}')" >&2; exit 1 ;;
    esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
