#!/bin/sh
# A single-node Slurm cluster on this machine, for the opt-in test of --launcher slurm
# (tests/test_slurm_cluster.py): Debian's slurm-wlm and munge, run as root, every file of the
# cluster under STATE_DIR. Usage: single_node.sh start STATE_DIR [CTLD_PORT SLURMD_PORT] | stop STATE_DIR
# (ports of its own, so that it never meets a cluster already on this machine: 6817 and 6818 by
# default). After `start`, clients find the cluster through SLURM_CONF=STATE_DIR/slurm.conf.
set -eu
action=$1
state=$(realpath -m "$2")
node=$(hostname -s)
ctld_port=${3:-6817}
slurmd_port=${4:-6818}
case "$action" in
start)
    for tool in munged slurmctld slurmd sbatch; do
        command -v "$tool" >/dev/null || { echo "single_node.sh: $tool not found (apt-get install slurm-wlm munge)" >&2; exit 2; }
    done
    mkdir -p "$state/ctld" "$state/d" /run/munge
    [ -s /etc/munge/munge.key ] || mungekey --create --keyfile /etc/munge/munge.key
    chown -R munge:munge /etc/munge /run/munge 2>/dev/null || true
    pgrep -x munged >/dev/null || su -s /bin/sh munge -c munged 2>/dev/null || munged --force
    cpus=$(nproc)
    memory=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
    cat > "$state/slurm.conf" <<CONF
ClusterName=mtrepro
SlurmctldHost=$node
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/slurmctld.log
SlurmdLogFile=$state/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=60
# a cancelled job is killed 2 s after its SIGTERM (submitit's jobs ignore SIGTERM)
KillWait=2
NodeName=$node CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$state/slurm.conf"
    slurmctld
    slurmd
    for _ in $(seq 60); do   # up when the node takes jobs
        sinfo -h -o %T 2>/dev/null | grep -q idle && exit 0
        sleep 1
    done
    echo "single_node.sh: the node did not come up; see $state/slurmctld.log and $state/slurmd.log" >&2
    exit 1
    ;;
stop)
    # the jobs first, then every process of this cluster: the daemons, the job steps and the
    # jobs' own processes, each known by the SLURM_CONF it runs under
    SLURM_CONF="$state/slurm.conf" scancel --user "$(id -un)" 2>/dev/null || true
    sleep 1
    for environ in /proc/[0-9]*/environ; do
        if { tr '\0' '\n' < "$environ"; } 2>/dev/null | grep -qx "SLURM_CONF=$state/slurm.conf"; then
            pid=${environ#/proc/}
            pid=${pid%/environ}
            [ "$pid" = "$$" ] || kill -9 "$pid" 2>/dev/null || true   # (not this script, if it runs under it)
        fi
    done
    ;;
*)
    echo "usage: single_node.sh start|stop STATE_DIR" >&2
    exit 2
    ;;
esac
