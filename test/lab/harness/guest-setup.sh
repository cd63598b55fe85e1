#!/bin/bash
# Stage 2 of the lab guest: PID 1 on the overlay of the host's root.
# Builds the SAN (LIO ramdisk LU exported over tcm_loop or iSCSI, N paths),
# starts udevd and multipathd, waits for the multipath map with every path
# active, describes the topology in LAB_* variables, runs the job, records
# its exit status in the results share and powers off.
#
# The results share (/lab) holds: job.env (from the host), phases (one
# "<phase> <uptime>" line per step), setup.log, failure (why setup failed),
# topology.env, output.log (the job's output), exit-status, artifacts/.
set -u
REPO="${1:-}"
SHARE=/lab
SYSTEM_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# Under TCG every dynamically linked exec over 9p costs 0.1-0.7 s, so setup
# uses builtins where it can and stage 1's static busybox (in RAM) for small
# commands. Daemons and the job get the normal PATH.
export PATH=/run/lab-bin:$SYSTEM_PATH
export HOME=/root LANG=C.UTF-8

uptime_s() { local u; read -r u _ </proc/uptime; echo "$u"; }
phase() {
  local up
  read -r up _ </proc/uptime
  echo "$1 $up" >>"$SHARE/phases"
  echo "lab: [$up] $1" >/dev/console
}
log() { echo "[$(uptime_s)] $*"; }
power_off() {
  sync
  busybox poweroff -f
  sleep 10
}
die() {
  echo "lab: SETUP FAILED: $*" >/dev/console
  log "SETUP FAILED: $*"
  echo "$*" >"$SHARE/failure"
  phase failed
  power_off
}
# A FIFO (made by stage 1) that nobody writes to: read -t on it sleeps without forking.
exec {NAP_FD}<>/run/lab-nap
nap() { read -r -t "$1" -u "$NAP_FD" _; }
# Polls "$3..." every $4 s (default 0.1) until it succeeds; dies naming $2 after $1 seconds.
wait_for() {
  local seconds="$1" what="$2" deadline
  shift 2
  deadline=$((${EPOCHREALTIME/./} + seconds * 1000000))
  until "$@" >/dev/null 2>&1; do
    if ((${EPOCHREALTIME/./} > deadline)); then die "timed out after ${seconds} s waiting for $what"; fi
    nap 0.1
  done
}
trap 'die "stage 2 exited unexpectedly (see setup.log)"' EXIT

exec >>"$SHARE/setup.log" 2>&1
# A trace with wall-clock stamps is what tells where boot time goes.
PS4='+ ${EPOCHREALTIME} '
set -x
phase stage2
[ -f "$SHARE/job.env" ] || die "no job.env in the results share"
# shellcheck disable=SC1091
source "$SHARE/job.env"
[ -n "$REPO" ] && [ -d "$REPO" ] || die "repository path '$REPO' (lab.repo=) is not a directory"

# A clean slate for state the host's /etc might carry.
for stale in /etc/multipath /etc/multipath.conf /etc/iscsi/nodes /etc/iscsi/send_targets /etc/iscsi/ifaces /var/lib/iscsi; do
  [ -e "$stale" ] && rm -rf "$stale"
done
mkdir -p /etc/multipath/conf.d /etc/iscsi/ifaces /etc/iscsi/nodes /var/target/pr /var/target/alua
[ -f "$REPO/fixtures/lab/multipath.conf" ] || die "no $REPO/fixtures/lab/multipath.conf"
echo "$(<"$REPO/fixtures/lab/multipath.conf")" >/etc/multipath.conf

modules=(sd_mod sg scsi_dh_alua dm_mod dm_multipath dm_round_robin dm_service_time target_core_mod)
case "$LAB_FABRIC" in
  tcm_loop) modules+=(tcm_loop) ;;
  iscsi) modules+=(iscsi_target_mod iscsi_tcp) ;;
  *) die "unknown LAB_FABRIC '$LAB_FABRIC'" ;;
esac
modprobe -a "${modules[@]}" || die "modprobe ${modules[*]}"
phase modules

# Rules whose programs the lab does not need (sg_inq, sh|sed, multipath -u/-U,
# kpartx, ...): each costs an exec per device under TCG, and dm map creation
# waits for udev. An empty file in /etc/udev/rules.d masks the packaged one.
# What stays: ID_SERIAL (scsi_id), /dev/disk/by-*, the dm rules and dm-notify.
if [ "${LAB_FULL_UDEV:-0}" != 1 ]; then
  mkdir -p /etc/udev/rules.d
  for rules in 55-scsi-sg3_id 58-scsi-sg3_symlink 60-multipath 56-dm-mpath 56-dm-parts 60-kpartx 68-del-part-nodes 64-btrfs; do
    : >"/etc/udev/rules.d/$rules.rules"
  done
fi

# udevd first, so the SCSI devices LIO creates below get their udev properties
# (ID_SERIAL/WWID) as they appear; then a trigger for what existed before.
PATH=$SYSTEM_PATH /usr/lib/systemd/systemd-udevd --daemon --resolve-names=never || die "start systemd-udevd"
udevadm trigger --action=add --subsystem-match=block --subsystem-match=misc
phase udevd

CFG=/sys/kernel/config/target
BACKSTORE=$CFG/core/rd_mcp_0/lab0
LU_SERIAL=mpathprlab0001
mkdir -p "$BACKSTORE" || die "create the rd_mcp backstore"
echo "rd_pages=8192" >"$BACKSTORE/control"
echo "$LU_SERIAL" >"$BACKSTORE/wwn/vpd_unit_serial"
echo 1 >"$BACKSTORE/enable" || die "enable the rd_mcp backstore"

path_devices=() path_initiators=() path_targets=() host_b_device=""
initiator_a="" initiator_b=""

# Sets DISK to the sd disk under a sysfs directory that holds SCSI devices; fails if there is none yet.
find_disk() {
  local dev
  DISK=
  for dev in "$1"/block/* "$1"/*/block/* "$1"/*/*/block/*; do
    [ -e "$dev" ] && { DISK=${dev##*/}; return 0; }
  done
  return 1
}

# Sets DISK to the disk of the tcm_loop TPG $1, found through the SCSI host its
# address attribute names, since H:C:T:L numbers change between boots.
tcm_loop_disk() {
  local address
  read -r address <"$1/address" || return 1
  find_disk "/sys/class/scsi_host/host${address%%:*}/device"
}

setup_tcm_loop() {
  local i count=$LAB_PATHS hex targets=() nexuses=() tpgs=()
  ((LAB_SECOND_HOST)) && count=$((LAB_PATHS + 1))
  for ((i = 1; i <= count; i++)); do
    printf -v hex '%02x' "$i"
    targets+=("naa.5001405ee00000$hex")
    if ((i > LAB_PATHS)); then nexuses+=(naa.5001405bb0000001); else nexuses+=("naa.5001405aa00000$hex"); fi
    tpgs+=("$CFG/loopback/naa.5001405ee00000$hex/tpgt_1")
  done
  mkdir -p "${tpgs[@]/%//lun/lun_0}" || die "create the tcm_loop targets"
  for ((i = 0; i < count; i++)); do
    # The nexus must exist before the LUN: linking the LUN scans the SCSI host,
    # and a scan without a nexus finds nothing and is not repeated.
    echo "${nexuses[i]}" >"${tpgs[i]}/nexus" || die "create the nexus ${nexuses[i]} on ${targets[i]}"
    ln -s "$BACKSTORE" "${tpgs[i]}/lun/lun_0/lab0" || die "map the LU into ${targets[i]}"
  done
  for ((i = 0; i < count; i++)); do
    wait_for 20 "the SCSI disk of tcm_loop target ${targets[i]}" tcm_loop_disk "${tpgs[i]}"
    if ((i >= LAB_PATHS)); then
      host_b_device=/dev/$DISK
      initiator_b=${nexuses[i]}
    else
      path_devices+=("/dev/$DISK")
      path_initiators+=("${nexuses[i]}")
      path_targets+=("${targets[i]}/tpgt_1")
    fi
  done
  initiator_a=$(IFS=,; echo "${path_initiators[*]}")
}

TARGET_IQN=iqn.2003-01.org.linux-iscsi.lab:mpath-pr
setup_iscsi() {
  local i tpg
  initiator_a=iqn.2024-01.lab.mpath-pr:host-a
  initiator_b=iqn.2024-01.lab.mpath-pr:host-b
  local dirs=()
  for ((i = 1; i <= LAB_PATHS; i++)); do
    dirs+=("$CFG/iscsi/$TARGET_IQN/tpgt_$i/lun/lun_0" "$CFG/iscsi/$TARGET_IQN/tpgt_$i/np/127.0.0.$i:3260")
  done
  mkdir -p "${dirs[@]}" || die "create the iSCSI TPGs and their portals"
  for ((i = 1; i <= LAB_PATHS; i++)); do
    tpg=$CFG/iscsi/$TARGET_IQN/tpgt_$i
    ln -s "$BACKSTORE" "$tpg/lun/lun_0/lab0" || die "map the LU into TPG $i"
    echo 1 >"$tpg/attrib/generate_node_acls"
    echo 1 >"$tpg/attrib/cache_dynamic_acls"
    echo 0 >"$tpg/attrib/demo_mode_write_protect"
    echo 0 >"$tpg/attrib/authentication"
    echo 1 >"$tpg/enable" || die "enable iSCSI TPG $i"
  done
  phase target

  echo "InitiatorName=$initiator_a" >/etc/iscsi/initiatorname.iscsi
  PATH=$SYSTEM_PATH iscsid -f >>"$SHARE/iscsid.log" 2>&1 &
  # Static node records written directly (what `iscsiadm -m node -o new` would
  # write, minus the defaults): each iscsiadm exec costs about a second here.
  local records=()
  for ((i = 1; i <= LAB_PATHS; i++)); do records+=("/etc/iscsi/nodes/$TARGET_IQN/127.0.0.$i,3260,$i"); done
  mkdir -p "${records[@]}" || die "create the iSCSI node records"
  for ((i = 1; i <= LAB_PATHS; i++)); do
    iscsi_node_record "$i" default "$initiator_a" >"/etc/iscsi/nodes/$TARGET_IQN/127.0.0.$i,3260,$i/default"
  done
  if ((LAB_SECOND_HOST)); then
    printf '%s\n' '# BEGIN RECORD 2.1.8' 'iface.iscsi_ifacename = hostb' 'iface.transport_name = tcp' \
      "iface.initiatorname = $initiator_b" '# END RECORD' >/etc/iscsi/ifaces/hostb
    iscsi_node_record 1 hostb "$initiator_b" >"/etc/iscsi/nodes/$TARGET_IQN/127.0.0.1,3260,1/hostb"
  fi
  local attempt
  # iscsid may not be listening yet; iscsiadm fails fast then, so retry briefly.
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    iscsiadm -m node --loginall=all >/dev/null && break
    nap 0.3
  done
  local expected=$LAB_PATHS
  ((LAB_SECOND_HOST)) && expected=$((expected + 1))
  wait_for 30 "$expected iSCSI sessions with a disk" iscsi_all_disks "$expected"
  # Order host A's paths by portal (TPG i <-> 127.0.0.i), which is stable across boots.
  local session address name
  for ((i = 1; i <= LAB_PATHS; i++)); do
    for session in /sys/class/iscsi_session/session*; do
      read -r name <"$session/initiatorname" || name=
      read -r address <"/sys/class/iscsi_connection/connection${session##*session}:0/persistent_address" || address=
      find_disk "$session/device" || continue
      if [ "$address" = "127.0.0.$i" ] && [ "$name" != "$initiator_b" ]; then
        path_devices+=("/dev/$DISK")
        path_initiators+=("$initiator_a")
        path_targets+=("$TARGET_IQN/tpgt_$i")
      fi
      if ((LAB_SECOND_HOST)) && ((i == 1)) && [ "$name" = "$initiator_b" ]; then
        host_b_device=/dev/$DISK
      fi
    done
  done
  ((${#path_devices[@]} == LAB_PATHS)) || die "found ${#path_devices[@]} host A iSCSI paths, expected $LAB_PATHS: $(iscsiadm -m session -P 3 2>&1 | tail -40)"
  if ((LAB_SECOND_HOST)) && [ -z "$host_b_device" ]; then die "no host B iSCSI disk: $(iscsiadm -m session -P 3 2>&1 | tail -40)"; fi
}
# An open-iscsi 2.1.8 node record for TPG $1 (portal 127.0.0.$1:3260) through iface $2 named $3.
iscsi_node_record() {
  local iface_initiator=""
  [ "$2" = default ] || iface_initiator="iface.initiatorname = $3"
  printf '%s\n' '# BEGIN RECORD 2.1.8' "node.name = $TARGET_IQN" "node.tpgt = $1" 'node.startup = manual' \
    "iface.iscsi_ifacename = $2" 'iface.transport_name = tcp' ${iface_initiator:+"$iface_initiator"} \
    'node.discovery_type = static' 'node.session.initial_login_retry_max = 8' 'node.session.cmds_max = 128' \
    'node.session.queue_depth = 32' 'node.session.nr_sessions = 1' 'node.session.auth.authmethod = None' \
    'node.session.timeo.replacement_timeout = 5' 'node.session.err_timeo.abort_timeout = 15' \
    'node.session.err_timeo.lu_reset_timeout = 30' 'node.session.err_timeo.tgt_reset_timeout = 30' \
    'node.session.err_timeo.host_reset_timeout = 60' 'node.session.iscsi.FastAbort = Yes' \
    'node.session.iscsi.InitialR2T = No' 'node.session.iscsi.ImmediateData = Yes' \
    'node.session.iscsi.FirstBurstLength = 262144' 'node.session.iscsi.MaxBurstLength = 16776192' \
    'node.session.iscsi.DefaultTime2Wait = 2' 'node.session.iscsi.MaxConnections = 1' \
    'node.session.iscsi.MaxOutstandingR2T = 1' 'node.session.scan = auto' \
    "node.conn[0].address = 127.0.0.$1" 'node.conn[0].port = 3260' 'node.conn[0].startup = manual' \
    'node.conn[0].tcp.window_size = 524288' 'node.conn[0].timeo.logout_timeout = 15' \
    'node.conn[0].timeo.login_timeout = 15' 'node.conn[0].timeo.auth_timeout = 45' \
    'node.conn[0].timeo.noop_out_interval = 5' 'node.conn[0].timeo.noop_out_timeout = 5' \
    'node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144' 'node.conn[0].iscsi.HeaderDigest = None' \
    'node.conn[0].iscsi.DataDigest = None' '# END RECORD'
}
iscsi_all_disks() {
  local n=0 session
  for session in /sys/class/iscsi_session/session*; do
    [ -e "$session" ] || continue
    find_disk "$session/device" && n=$((n + 1))
  done
  ((n >= $1))
}

case "$LAB_FABRIC" in
  tcm_loop) setup_tcm_loop ;;
  iscsi) setup_iscsi ;;
esac
phase paths

if [ -n "$host_b_device" ]; then
  # Host B is a different initiator: keep its path out of host A's map.
  printf 'blacklist {\n\tdevnode "^%s$"\n}\n' "${host_b_device#/dev/}" >/etc/multipath/conf.d/lab-host-b.conf
  # ...and out of udev's inotify watch (60-block.rules puts one on every sd disk).
  # Otherwise each close of an fd opened for writing makes udevd synthesize a
  # "change" event whose blkid probe READs the disk a moment later; sd retries
  # that READ past a UNIT ATTENTION, so the probe silently consumes attentions
  # (06/2A/05 after a PREEMPT) that host B's tests must see. The rule sorts
  # after 60-block.rules; the reload and the change event drop the watch set
  # when the disk was added (udevd ends a watch on every event it processes).
  echo "SUBSYSTEM==\"block\", KERNEL==\"${host_b_device#/dev/}\", OPTIONS+=\"nowatch\"" >/etc/udev/rules.d/99-lab-host-b-nowatch.rules
  udevadm control --reload || die "udevadm control --reload"
  echo change >"/sys/class/block/${host_b_device#/dev/}/uevent" || die "re-evaluate host B's udev rules"
fi
udevadm settle --timeout=30 || log "udevadm settle timed out"
phase udev-settled

PATH=$SYSTEM_PATH /sbin/multipathd -d -s >>"$SHARE/multipathd.log" 2>&1 &
MULTIPATHD_PID=$!
mpath_ready() {
  local active
  [ -b /dev/mapper/mpatha ] || return 1
  active=$(multipathd show paths raw format "%m %t %T" 2>/dev/null | grep -c '^mpatha active ready')
  ((active == LAB_PATHS))
}
wait_for 60 "/dev/mapper/mpatha with $LAB_PATHS active ready paths" mpath_ready
kill -0 "$MULTIPATHD_PID" 2>/dev/null || die "multipathd exited"
phase multipath

if ((LAB_DBUS)); then
  mkdir -p /run/dbus
  PATH=$SYSTEM_PATH dbus-daemon --system --fork --nopidfile || die "start the system dbus-daemon"
  wait_for 10 "the system bus socket" test -S /run/dbus/system_bus_socket
  export LAB_DBUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
  phase dbus
fi

join() { local IFS=,; echo "$*"; }
export LAB=1 LAB_REPO="$REPO" LAB_FABRIC LAB_PATHS
export LAB_MPATH_NAME=mpatha
export LAB_MPATH_DEVICE=/dev/mapper/mpatha
dm_node=$(readlink /dev/mapper/mpatha)
export LAB_DM_DEVICE="/dev/${dm_node##*/}"
read -r dm_uuid <"/sys/block/${dm_node##*/}/dm/uuid" || die "read the map's dm uuid"
export LAB_WWID="${dm_uuid#mpath-}"
export LAB_PATH_DEVICES="$(join "${path_devices[@]}")"
export LAB_PATH_INITIATORS="$(join "${path_initiators[@]}")"
export LAB_PATH_TARGET_PORTS="$(join "${path_targets[@]}")"
export LAB_INITIATOR_A="$initiator_a"
export LAB_INITIATOR_B="$initiator_b"
export LAB_HOST_B_DEVICE="$host_b_device"
export LAB_LIO_BACKSTORE="$BACKSTORE"
export LAB_ISCSI_TARGET="$([ "$LAB_FABRIC" = iscsi ] && echo "$TARGET_IQN")"
export LAB_OUTPUT_DIR="$SHARE/artifacts"
env | grep '^LAB' | sort >"$SHARE/topology.env"
phase ready

trap - EXIT
set +x
status=0
cd "$REPO" || die "cd $REPO"
if [ "$LAB_MODE" = shell ]; then
  stty -F /dev/ttyS0 rows "$LAB_TERM_ROWS" cols "$LAB_TERM_COLS" sane 2>/dev/null
  {
    echo
    echo "mpath-pr lab: $LAB_FABRIC, $LAB_PATHS paths, map $LAB_MPATH_DEVICE ($LAB_PATH_DEVICES)${LAB_HOST_B_DEVICE:+, host B $LAB_HOST_B_DEVICE}"
    echo "Topology in \$LAB_* (see $SHARE/topology.env). Exit the shell to power off (or Ctrl-A X)."
  } >/dev/ttyS0
  TERM=${TERM:-linux} PS1='lab:\w# ' setsid -c bash --norc -i </dev/ttyS0 >/dev/ttyS0 2>&1
  status=$?
else
  phase running
  stty -F /dev/ttyS1 raw -echo 2>/dev/null
  # The job's output goes to the host live (ttyS1) and to output.log in full.
  bash -c "$LAB_COMMAND" </dev/null 2>&1 | tee "$SHARE/output.log" >/dev/ttyS1
  status=${PIPESTATUS[0]}
fi
echo "$status" >"$SHARE/exit-status"
phase done
power_off
