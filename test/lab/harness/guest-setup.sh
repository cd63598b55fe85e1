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
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

uptime_s() { local u; read -r u _ </proc/uptime; echo "$u"; }
phase() {
  echo "$1 $(uptime_s)" >>"$SHARE/phases"
  echo "lab: [$(uptime_s)] $1" >/dev/console
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
# Polls "$@" every 0.1 s until it succeeds; dies naming $2 after $1 seconds.
wait_for() {
  local seconds="$1" what="$2" deadline
  shift 2
  deadline=$((${EPOCHREALTIME/./} + seconds * 1000000))
  until "$@" >/dev/null 2>&1; do
    if ((${EPOCHREALTIME/./} > deadline)); then die "timed out after ${seconds} s waiting for $what"; fi
    sleep 0.1
  done
}
trap 'die "stage 2 exited unexpectedly at line $LINENO"' EXIT

mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/pts /dev/shm /run/lock
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
exec >>"$SHARE/setup.log" 2>&1
# A trace with wall-clock stamps is what tells where boot time goes.
PS4='+ ${EPOCHREALTIME} '
set -x
phase stage2
[ -f "$SHARE/job.env" ] || die "no job.env in the results share"
# shellcheck disable=SC1091
source "$SHARE/job.env"
[ -n "$REPO" ] && [ -d "$REPO" ] || die "repository path '$REPO' (lab.repo=) is not a directory"
modprobe configfs 2>/dev/null
mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config || die "mount configfs"

hostname lab
ip link set lo up || die "bring up lo"

# A clean slate for the state the host's /etc might carry.
rm -rf /etc/multipath /etc/multipath.conf /etc/iscsi/nodes /etc/iscsi/send_targets /etc/iscsi/ifaces /var/lib/iscsi
mkdir -p /etc/multipath/conf.d /etc/iscsi/ifaces /var/target/pr /var/target/alua
cp "$REPO/fixtures/lab/multipath.conf" /etc/multipath.conf || die "copy fixtures/lab/multipath.conf"

modules=(sd_mod sg scsi_dh_alua dm_mod dm_multipath dm_round_robin dm_service_time target_core_mod)
case "$LAB_FABRIC" in
  tcm_loop) modules+=(tcm_loop) ;;
  iscsi) modules+=(iscsi_target_mod iscsi_tcp) ;;
  *) die "unknown LAB_FABRIC '$LAB_FABRIC'" ;;
esac
modprobe -a "${modules[@]}" || die "modprobe ${modules[*]}"
phase modules

# udevd first, so the SCSI devices LIO creates below get their udev properties
# (ID_SERIAL/WWID) as they appear; then a trigger for what existed before.
/usr/lib/systemd/systemd-udevd --daemon --resolve-names=never || die "start systemd-udevd"
udevadm trigger --action=add --subsystem-match=block --subsystem-match=misc
phase udevd

CFG=/sys/kernel/config/target
BACKSTORE=$CFG/core/rd_mcp_0/lab0
LU_SERIAL=mpathprlab0001
mkdir -p "$BACKSTORE" || die "create the rd_mcp backstore"
echo "rd_pages=8192" >"$BACKSTORE/control"
echo "$LU_SERIAL" >"$BACKSTORE/wwn/vpd_unit_serial"
echo 1 >"$BACKSTORE/enable" || die "enable the rd_mcp backstore"

hex2() { printf '%02x' "$1"; }
path_devices=() path_initiators=() path_targets=() host_b_device=""
initiator_a="" initiator_b=""

# First sd disk under a sysfs directory that holds SCSI devices.
disk_under() {
  local dev
  for dev in "$1"/block/* "$1"/*/block/* "$1"/*/*/block/*; do
    [ -e "$dev" ] && { basename "$dev"; return 0; }
  done
  return 1
}

setup_tcm_loop() {
  local i count=$LAB_PATHS target nexus tpg
  ((LAB_SECOND_HOST)) && count=$((LAB_PATHS + 1))
  for ((i = 1; i <= count; i++)); do
    target=naa.5001405ee00000$(hex2 "$i")
    if ((i > LAB_PATHS)); then nexus=naa.5001405bb0000001; else nexus=naa.5001405aa00000$(hex2 "$i"); fi
    tpg=$CFG/loopback/$target/tpgt_1
    # The nexus must exist before the LUN: linking the LUN scans the SCSI host,
    # and a scan without a nexus finds nothing and is not repeated.
    mkdir -p "$tpg/lun/lun_0" || die "create tcm_loop target $target"
    echo "$nexus" >"$tpg/nexus" || die "create the nexus $nexus on $target"
    ln -s "$BACKSTORE" "$tpg/lun/lun_0/lab0" || die "map the LU into $target"
  done
  # Map each target to its sd device through the SCSI host its TPG address names,
  # since H:C:T:L numbers change between boots.
  for ((i = 1; i <= count; i++)); do
    target=naa.5001405ee00000$(hex2 "$i")
    tpg=$CFG/loopback/$target/tpgt_1
    wait_for 20 "the SCSI disk of tcm_loop target $target" test -n "$(tcm_loop_disk "$tpg")"
    if ((i > LAB_PATHS)); then
      host_b_device=/dev/$(tcm_loop_disk "$tpg")
      initiator_b=$(cat "$tpg/nexus")
    else
      path_devices+=("/dev/$(tcm_loop_disk "$tpg")")
      path_initiators+=("$(cat "$tpg/nexus")")
      path_targets+=("$target/tpgt_1")
    fi
  done
  initiator_a=$(IFS=,; echo "${path_initiators[*]}")
}
tcm_loop_disk() {
  local address host
  address=$(cat "$1/address" 2>/dev/null) || return 1
  host=${address%%:*}
  disk_under "/sys/class/scsi_host/host$host/device" 2>/dev/null
}

TARGET_IQN=iqn.2003-01.org.linux-iscsi.lab:mpath-pr
setup_iscsi() {
  local i tpg portal
  initiator_a=iqn.2024-01.lab.mpath-pr:host-a
  initiator_b=iqn.2024-01.lab.mpath-pr:host-b
  for ((i = 1; i <= LAB_PATHS; i++)); do
    tpg=$CFG/iscsi/$TARGET_IQN/tpgt_$i
    portal=127.0.0.$i:3260
    mkdir -p "$tpg/lun/lun_0" || die "create iSCSI TPG $i"
    ln -s "$BACKSTORE" "$tpg/lun/lun_0/lab0" || die "map the LU into TPG $i"
    mkdir "$tpg/np/$portal" || die "listen on $portal"
    echo 1 >"$tpg/attrib/generate_node_acls"
    echo 1 >"$tpg/attrib/cache_dynamic_acls"
    echo 0 >"$tpg/attrib/demo_mode_write_protect"
    echo 0 >"$tpg/attrib/authentication"
    echo 1 >"$tpg/enable" || die "enable iSCSI TPG $i"
  done
  phase target

  echo "InitiatorName=$initiator_a" >/etc/iscsi/initiatorname.iscsi
  mkdir -p /run/lock/iscsi
  iscsid -f >>"$SHARE/iscsid.log" 2>&1 &
  for ((i = 1; i <= LAB_PATHS; i++)); do
    portal=127.0.0.$i:3260
    iscsiadm -m node -o new -T "$TARGET_IQN" -p "$portal,$i" >/dev/null || die "create the node record for $portal"
    iscsiadm -m node -T "$TARGET_IQN" -p "$portal" -o update -n node.session.timeo.replacement_timeout -v 5 || die "update node $portal"
  done
  if ((LAB_SECOND_HOST)); then
    iscsiadm -m iface -I hostb -o new >/dev/null || die "create the host B iface"
    iscsiadm -m iface -I hostb -o update -n iface.transport_name -v tcp >/dev/null
    iscsiadm -m iface -I hostb -o update -n iface.initiatorname -v "$initiator_b" >/dev/null || die "name the host B initiator"
    iscsiadm -m node -o new -T "$TARGET_IQN" -p "127.0.0.1:3260,1" -I hostb >/dev/null || die "create the host B node record"
  fi
  local attempt
  # iscsid may not be listening yet; iscsiadm fails fast then, so retry briefly.
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    iscsiadm -m node --loginall=all >/dev/null && break
    sleep 0.3
  done
  local expected=$LAB_PATHS
  ((LAB_SECOND_HOST)) && expected=$((expected + 1))
  wait_for 30 "$expected iSCSI sessions with a disk" iscsi_all_disks "$expected"
  # Order host A's paths by portal (TPG i ↔ 127.0.0.i), which is stable across boots.
  local session address name dev
  for ((i = 1; i <= LAB_PATHS; i++)); do
    for session in /sys/class/iscsi_session/session*; do
      name=$(cat "$session/initiatorname" 2>/dev/null)
      address=$(cat /sys/class/iscsi_connection/connection"${session##*session}":0/persistent_address 2>/dev/null)
      dev=$(disk_under "$session/device/target"*)
      if [ "$address" = "127.0.0.$i" ] && [ "$name" != "$initiator_b" ]; then
        path_devices+=("/dev/$dev")
        path_initiators+=("$initiator_a")
        path_targets+=("$TARGET_IQN/tpgt_$i")
      fi
      if ((LAB_SECOND_HOST)) && ((i == 1)) && [ "$name" = "$initiator_b" ]; then
        host_b_device=/dev/$dev
      fi
    done
  done
  ((${#path_devices[@]} == LAB_PATHS)) || die "found ${#path_devices[@]} host A iSCSI paths, expected $LAB_PATHS: $(iscsiadm -m session -P 3 2>&1 | tail -40)"
  if ((LAB_SECOND_HOST)) && [ -z "$host_b_device" ]; then die "no host B iSCSI disk: $(iscsiadm -m session -P 3 2>&1 | tail -40)"; fi
}
iscsi_all_disks() {
  local n=0 session
  for session in /sys/class/iscsi_session/session*; do
    [ -e "$session" ] || continue
    disk_under "$session/device/target"* >/dev/null 2>&1 && n=$((n + 1))
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
fi
udevadm settle --timeout=30 || log "udevadm settle timed out"
phase udev-settled

/sbin/multipathd -d -s >>"$SHARE/multipathd.log" 2>&1 &
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
  dbus-daemon --system --fork --nopidfile || die "start the system dbus-daemon"
  wait_for 10 "the system bus socket" test -S /run/dbus/system_bus_socket
  export LAB_DBUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
  phase dbus
fi

join() { local IFS=,; echo "$*"; }
export LAB=1 LAB_REPO="$REPO" LAB_FABRIC LAB_PATHS
export LAB_MPATH_NAME=mpatha
export LAB_MPATH_DEVICE=/dev/mapper/mpatha
export LAB_DM_DEVICE="/dev/$(basename "$(readlink -f /dev/mapper/mpatha)")"
export LAB_WWID="$(multipathd show maps raw format "%n %w" | awk '$1=="mpatha"{print $2}')"
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
