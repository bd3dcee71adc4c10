# Guest script (busybox sh): the Linux kernel NVMe/TCP initiator against an oxstor target
# on the host. Every check prints "CHECK <name> ok" or fails the run with "FAIL <name>".
#   env: NVME_NQN (allowed subsystem), NVME_NQN_DENIED (allows another host only),
#        EXPECT_BYTES (namespace size), EXPECT_SERIAL
: "${NVME_NQN:?}" "${NVME_NQN_DENIED:?}" "${EXPECT_BYTES:?}" "${EXPECT_SERIAL:?}"
A=$NVME_HOST_ADDR; P=$NVME_TARGET_PORT
fail() { echo "FAIL $*"; dmesg | grep -i nvme | tail -20; exit 1; }
ok() { echo "CHECK $1 ok"; }

nvme discover -t tcp -a "$A" -s "$P" > /tmp/disc 2>&1 || { cat /tmp/disc; fail discover; }
cat /tmp/disc
grep -q "subnqn: *$NVME_NQN" /tmp/disc || fail "discover-lists-subsystem"
ok discover

nvme connect -t tcp -a "$A" -s "$P" -n "$NVME_NQN" || fail connect
DEV=""
for i in $(seq 1 40); do
  DEV=$(ls /dev/nvme*n1 2>/dev/null | head -n1); [ -n "$DEV" ] && break; sleep 0.25
done
[ -n "$DEV" ] || fail "namespace-appears"
CTRL=${DEV%n1}
ok connect
nvme list | tee /tmp/list
BYTES=$(( $(cat /sys/block/$(basename "$DEV")/size) * 512 ))
[ "$BYTES" = "$EXPECT_BYTES" ] || fail "namespace-size $BYTES != $EXPECT_BYTES"
ok namespace-size

# Namespace hot-add: the test on the host adds NSID 2 when it sees this line; the target's
# Asynchronous Event makes the kernel rescan and the new block device appear.
echo "@@ADD-NAMESPACE-2@@"
NS2=""
for i in $(seq 1 80); do
  [ -e "${CTRL}n2" ] && NS2=${CTRL}n2 && break; sleep 0.25
done
[ -n "$NS2" ] || fail "namespace-hot-add (no ${CTRL}n2 after the AER)"
ok namespace-hot-add-aer

nvme id-ctrl "$CTRL" > /tmp/idctrl || fail id-ctrl
grep -q "^sn *: *$EXPECT_SERIAL" /tmp/idctrl || { cat /tmp/idctrl | head -20; fail id-ctrl-serial; }
grep -E "^(sn|mn|subnqn|mdts|ioccsz|sgls) " /tmp/idctrl
ok id-ctrl
nvme id-ns "$DEV" > /tmp/idns || fail id-ns
grep -E "^(nsze|ncap|lbaf)" /tmp/idns
ok id-ns
nvme smart-log "$CTRL" || fail smart-log
ok smart-log

fio --name=verify4k --filename="$DEV" --ioengine=libaio --direct=1 --rw=randwrite --bs=4k \
    --iodepth=16 --size=64m --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --output-format=terse --terse-version=3 > /tmp/fio1 2>&1 || { cat /tmp/fio1; fail fio-4k-verify; }
ok fio-randwrite-4k-verify-64MiB
fio --name=verify128k --filename="$DEV" --ioengine=libaio --direct=1 --rw=write --bs=128k \
    --iodepth=8 --size=16m --offset=64m --verify=crc32c --do_verify=1 --verify_fatal=1 \
    --output-format=terse --terse-version=3 > /tmp/fio2 2>&1 || { cat /tmp/fio2; fail fio-128k-verify; }
ok fio-write-128k-verify
# Flush, write zeroes and deallocate reach the target too.
nvme flush "$DEV" -n 1 || fail flush
nvme write-zeroes "$DEV" -n 1 -s 0 -c 7 || fail write-zeroes
nvme dsm "$DEV" -n 1 -d -s 8 -b 8 || fail dsm-deallocate
ok flush-write-zeroes-dsm

if nvme connect -t tcp -a "$A" -s "$P" -n "$NVME_NQN_DENIED" > /tmp/deny 2>&1; then
  cat /tmp/deny; fail "denied-host-connected"
fi
cat /tmp/deny
ok denied-host-refused

nvme disconnect -n "$NVME_NQN" || fail disconnect
sleep 0.5
[ -e "$DEV" ] && fail "device-still-present-after-disconnect"
ok disconnect
dmesg | grep -i -E "nvme" | tail -20
echo "ALL CHECKS PASSED"
