#!/bin/busybox sh
# Stage 1 of the lab guest: PID 1 inside the initramfs.
# Its only job is to reach the host's root filesystem: load the few modules
# needed for virtio-9p and overlayfs, mount the host's / read-only with a tmpfs
# overlay on top (so /etc, /var and /run are writable in the guest), mount the
# writable results share, and hand over to stage 2 (guest-setup.sh), which lives
# in the project checkout so that it can change without rebuilding this image.
/bin/busybox mkdir -p /proc /sys /dev /bin /sbin
/bin/busybox --install -s /bin
export PATH=/bin

fail() {
  echo "lab-init: FATAL: $*" >/dev/console
  # Powering off (not exiting) keeps the kernel from panicking, and the host
  # turns the missing exit status into a failure with this console log.
  poweroff -f
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"

# modules.order lists the .ko files in dependency order (built by the host).
echo "lab-init: loading modules" >/dev/console
while read -r ko; do
  insmod "/modules/$ko" || fail "insmod $ko"
done </modules.order

stage2=
repo=
for word in $(cat /proc/cmdline); do
  case "$word" in
    lab.init=*) stage2="${word#lab.init=}" ;;
    lab.repo=*) repo="${word#lab.repo=}" ;;
  esac
done
[ -n "$stage2" ] || fail "no lab.init= on the kernel command line"

mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower \
  || fail "mount the host root over virtio-9p (tag hostroot)"
mount -t tmpfs -o mode=0755,size=1g tmpfs /rw || fail "mount the overlay tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
  || fail "mount the overlay root"
mkdir -p /newroot/lab
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 labout /newroot/lab \
  || fail "mount the results share (tag labout)"
[ -f "/newroot$stage2" ] || fail "stage 2 script $stage2 not found on the host root"

for fs in /proc /sys /dev; do mount --move "$fs" "/newroot$fs" || fail "move $fs"; done

# Chores stage 2 would otherwise pay a dynamically linked exec over 9p for
# (costly under TCG): the usual mounts, the hostname, lo. Stage 2 also gets
# this static busybox (in RAM) for its own small commands.
# A checkout under /tmp, /run or /dev/shm (CI may clone anywhere) would be hidden by the
# tmpfs mounted there next: keep its overlay view aside and put it back on top.
case "$repo" in
  /tmp/*|/run/*|/dev/shm/*) keep_repo=1; mkdir -p /rw/repo && mount --bind "/newroot$repo" /rw/repo || fail "keep the checkout $repo" ;;
esac
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "mount /run"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "mount /tmp"
mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/run/lock /newroot/run/lab-bin
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts || fail "mount /dev/pts"
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm || fail "mount /dev/shm"
mount -t configfs configfs /newroot/sys/kernel/config || fail "mount configfs"
if [ -n "${keep_repo:-}" ]; then
  mkdir -p "/newroot$repo" && mount --move /rw/repo "/newroot$repo" || fail "put the checkout $repo back"
fi
echo lab >/newroot/proc/sys/kernel/hostname
ip link set lo up || fail "bring up lo"
cp /bin/busybox /newroot/run/lab-bin/busybox || fail "copy busybox"
ln -s /proc/self/fd /newroot/dev/fd
ln -s /proc/self/fd/0 /newroot/dev/stdin
ln -s /proc/self/fd/1 /newroot/dev/stdout
ln -s /proc/self/fd/2 /newroot/dev/stderr
mkfifo /newroot/run/lab-nap || fail "mkfifo /run/lab-nap"
for applet in basename cat cp ln mkdir readlink rm sleep; do ln -s busybox "/newroot/run/lab-bin/$applet"; done
echo "lab-init: switch_root" >/dev/console
exec switch_root /newroot /bin/bash "$stage2" "$repo"
