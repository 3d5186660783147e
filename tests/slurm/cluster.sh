#!/usr/bin/env bash
# A one-node SLURM cluster for the test suite: Debian's slurm-wlm 22.05 as plain daemons (no systemd, no cgroups),
# with accounting (slurmdbd + MariaDB) and two partitions, `cpu` and `gpu` (two dummy GPUs as GRES).
#
#   tests/slurm/cluster.sh up      install (idempotent), write /etc/slurm/*.conf, start what is not running;
#                                  prints "started" or "already up" as its last line
#   tests/slurm/cluster.sh up --no-accounting   the same without slurmdbd / MariaDB (sacct then fails)
#   tests/slurm/cluster.sh down    stop exactly the daemons `up` started (their PIDs are in $STATE/pids/) and remove
#                                  the /etc/slurm configs `up` wrote
#   tests/slurm/cluster.sh status  one line per daemon: name, PID, alive or not
#
# State (database, spool, logs, PIDs, munge key) lives under $PRH_SLURM_STATE (default /var/lib/prh-slurm); MariaDB
# listens on 127.0.0.1:$PRH_SLURM_DB_PORT (13306); munged, if the machine runs none, on the default /run/munge socket.
# The config must be /etc/slurm/slurm.conf: the job-side executor plugin drops SLURM_CONF before its inner srun.
# Facts this encodes (each one breaks a real cluster too): munged's socket directory must be mode 0755; NodeName must
# equal `hostname -s`; RealMemory must not exceed physical memory; a GPU request on a node without GRES is refused.
set -euo pipefail

STATE=${PRH_SLURM_STATE:-/var/lib/prh-slurm}
WITH_DB=1  # `up --no-accounting`: no slurmdbd / MariaDB (for checking the profile on such a cluster)
DB_PORT=${PRH_SLURM_DB_PORT:-13306}
CLUSTER=prh
ACCOUNT=prh-test
MARK="# written by prh tests/slurm/cluster.sh"
CONF=/etc/slurm
PKGS=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

die() { echo "cluster.sh: $*" >&2; exit 1; }
pid_of() { cat "$STATE/pids/$1" 2>/dev/null || true; }
alive() {  # alive NAME: the recorded PID runs NAME (a stale PID reused by another program is not ours)
  local p; p=$(pid_of "$1")
  [ -n "$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ]
}
wait_for() {  # wait_for SECONDS WHAT COMMAND...: poll COMMAND until it succeeds
  local secs=$1 what=$2; shift 2
  for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  die "$what did not come up in ${secs} s (logs: $STATE/log/)"
}

install_packages() {
  local missing=()
  for b in slurmctld slurmd sbatch slurmdbd munged mariadbd; do command -v "$b" >/dev/null || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install ${PKGS[*]}"
  echo "cluster.sh: installing ${PKGS[*]}"
  # Debian's postinst would start the packaged services; this cluster starts its own daemons on its own paths.
  local policy=/usr/sbin/policy-rc.d made=""
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod 755 $policy; made=1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PKGS[@]}" >/dev/null
  [ -z "$made" ] || rm -f $policy
}

write_if_changed() {  # write_if_changed PATH MODE: stdin -> PATH, only if the content differs
  local tmp; tmp=$(mktemp)
  cat > "$tmp"
  if ! cmp -s "$tmp" "$1"; then install -m "$2" "$tmp" "$1"; CHANGED=1; fi
  rm -f "$tmp"
}

write_config() {
  mkdir -p "$CONF"
  for f in slurm.conf slurmdbd.conf gres.conf; do
    if [ -e "$CONF/$f" ] && ! grep -qF "$MARK" "$CONF/$f"; then
      die "$CONF/$f exists and was not written by this script; refusing to overwrite a real cluster's config"
    fi
  done
  local node cpus mem_kb real
  node=$(hostname -s)
  cpus=$(nproc)
  mem_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)
  real=$((mem_kb / 1024 * 9 / 10))  # RealMemory must not exceed physical memory
  local accounting="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$node
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment"
  [ "$WITH_DB" = 1 ] || accounting="AccountingStorageType=accounting_storage/none"
  write_if_changed "$CONF/slurm.conf" 644 <<EOF
$MARK
ClusterName=$CLUSTER
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MinJobAge=300
KillWait=5
InactiveLimit=0
SchedulerParameters=sched_interval=2
$accounting
JobCompType=jobcomp/none
NodeName=$node CPUs=$cpus RealMemory=$real Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node MaxTime=INFINITE State=UP
EOF
  write_if_changed "$CONF/gres.conf" 644 <<EOF
$MARK
NodeName=$node Name=gpu File=$STATE/dev/nvidia[0-1]
EOF
  write_if_changed "$CONF/slurmdbd.conf" 600 <<EOF
$MARK
DbdHost=$node
SlurmUser=root
AuthType=auth/munge
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=prh
StorageLoc=slurm_acct_db
EOF
}

start() {  # start NAME COMMAND...: run a foreground daemon in its own session, record its PID
  local name=$1; shift
  alive "$name" && return 0
  setsid "$@" > "$STATE/log/$name.out" 2>&1 < /dev/null 9>&- &  # 9: the lock, not for daemons
  echo $! > "$STATE/pids/$name"
}

mysql_root() { mariadb --no-defaults --socket="$STATE/mysql.sock" -uroot "$@"; }

start_accounting() {  # MariaDB on its own datadir, socket and loopback port; slurmdbd; cluster, account, user
  if [ ! -d "$STATE/mysql/mysql" ]; then
    mariadb-install-db --no-defaults --user=root --datadir="$STATE/mysql" --auth-root-authentication-method=socket \
      > "$STATE/log/mariadb-install.log" 2>&1
  fi
  start mariadbd mariadbd --no-defaults --user=root --datadir="$STATE/mysql" --socket="$STATE/mysql.sock" \
    --port="$DB_PORT" --bind-address=127.0.0.1 --pid-file="$STATE/run/mariadbd.pid" \
    --log-error="$STATE/log/mariadbd.log" --innodb-buffer-pool-size=32M --innodb-lock-wait-timeout=900 --skip-log-bin
  wait_for 30 mariadbd mysql_root -e "select 1"
  mysql_root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'prh';
                 CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'prh';
                 GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  start slurmdbd slurmdbd -D
  wait_for 30 slurmdbd sacctmgr -n show cluster
  sacctmgr -n show cluster format=cluster%30 | grep -qw "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
  sacctmgr -n show account format=account%30 | grep -qw "$ACCOUNT" || sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" >/dev/null
  sacctmgr -n show assoc user=root format=account%30 | grep -qw "$ACCOUNT" || \
    sacctmgr -i add user root account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
}

up() {
  [ "$(id -u)" = 0 ] || die "needs root (it installs packages and runs slurmd)"
  install_packages
  mkdir -p "$STATE"
  exec 9> "$STATE/lock"
  flock 9
  write_config
  mkdir -p "$STATE"/{pids,run,log,slurmctld,slurmd,dev,munge}
  if [ -n "${CHANGED:-}" ]; then  # a new config: restart the Slurm daemons this script runs
    for d in slurmd slurmctld slurmdbd; do stop "$d"; done
  fi
  local all=1
  munge -n > /dev/null 2>&1 || all=""  # munged may be the machine's own
  for d in "${DAEMONS[@]:1}"; do
    case "$d" in mariadbd | slurmdbd) [ "$WITH_DB" = 1 ] || continue ;; esac
    alive "$d" || all=""
  done
  if [ -n "$all" ] && sinfo -h >/dev/null 2>&1; then echo "already up"; return 0; fi
  # dummy GPUs for gres.conf: character devices (/dev/null's 1:3), which slurmd accepts and then exports as
  # CUDA_VISIBLE_DEVICES / SLURM_JOB_GPUS like real ones (plain files are refused: "not a valid character device")
  for i in 0 1; do
    f="$STATE/dev/nvidia$i"
    [ -c "$f" ] || { rm -f "$f"; mknod -m 666 "$f" c 1 3; }
  done
  # munge: Slurm's clients (sacctmgr included) talk to the default socket; its directory must be 0755
  mkdir -p /run/munge
  chmod 0755 /run/munge
  if ! munge -n > /dev/null 2>&1; then
    [ -s "$STATE/munge/munge.key" ] || dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1 count=1024 2>/dev/null
    chmod 0400 "$STATE/munge/munge.key"
    start munged munged --foreground --force --key-file="$STATE/munge/munge.key" --pid-file="$STATE/run/munged.pid" \
      --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/seed" --num-threads=4
    wait_for 10 munged munge -n
  fi
  if [ "$WITH_DB" = 1 ]; then start_accounting; else stop slurmdbd; stop mariadbd; fi
  start slurmctld slurmctld -D -i
  wait_for 30 slurmctld scontrol ping
  start slurmd slurmd -D
  wait_for 30 "slurmd (node idle)" bash -c "sinfo -h -N -o %t | grep -qx idle"
  echo "started"
}

stop() {  # stop NAME: TERM (then KILL after 10 s) the PID this script recorded for NAME
  local p; p=$(pid_of "$1")
  [ -n "$p" ] || return 0
  if alive "$1"; then
    kill -TERM "$p"
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; fi
  fi
  rm -f "$STATE/pids/$1"
}

down() {
  [ -d "$STATE/pids" ] || { echo "nothing to stop"; return 0; }
  exec 9> "$STATE/lock"
  flock 9
  local rev=() d
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do rev+=("${DAEMONS[i]}"); done
  for d in "${rev[@]}"; do stop "$d"; done
  # A config left behind points every Slurm client at a controller that is gone: `scontrol show config`, which the
  # executor plugin runs whenever snakemake starts, then waits 9 s on every local run. Remove what `up` wrote.
  for f in slurm.conf slurmdbd.conf gres.conf; do
    if [ -e "$CONF/$f" ] && grep -qF "$MARK" "$CONF/$f"; then rm -f "$CONF/$f"; fi
  done
  echo "stopped"
}

status() {
  for d in "${DAEMONS[@]}"; do
    if alive "$d"; then echo "$d $(pid_of "$d") alive"; else echo "$d - down"; fi
  done
}

case "${1:-}" in
  up) [ "${2:-}" != --no-accounting ] || WITH_DB=0; up ;;
  down) down ;;
  status) status ;;
  *) die "usage: $0 up|down|status" ;;
esac
