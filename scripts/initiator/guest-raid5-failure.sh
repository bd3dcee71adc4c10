# Guest script (busybox sh): fio with crc32c verification against a raid5 exported by oxstor
# while the host fails one of its members. Every check prints "CHECK <name> ok" or fails the
# run with "FAIL <name>".
#   env: NVME_NQN (the subsystem exporting the raid5)
: "${NVME_NQN:?}"
A=$NVME_HOST_ADDR; P=$NVME_TARGET_PORT
fail() { echo "FAIL $*"; dmesg | grep -i nvme | tail -20; exit 1; }
ok() { echo "CHECK $1 ok"; }
FIO="--ioengine=libaio --direct=1 --bs=4k --iodepth=16 --size=16m --verify=crc32c \
     --verify_fatal=1 --randrepeat=1 --output-format=terse --terse-version=3"

nvme connect -t tcp -a "$A" -s "$P" -n "$NVME_NQN" || fail connect
DEV=""
for i in $(seq 1 40); do
  DEV=$(ls /dev/nvme*n1 2>/dev/null | head -n1); [ -n "$DEV" ] && break; sleep 0.25
done
[ -n "$DEV" ] || fail "namespace-appears"
ok connect

# Step 1: all members healthy.
fio --name=healthy --filename="$DEV" --rw=randwrite --do_verify=1 $FIO > /tmp/fio1 2>&1 \
  || { cat /tmp/fio1; fail fio-verify-healthy; }
ok fio-verify-healthy

# Step 2: a new write+verify pass over the next 32 MiB. The host, on the marker, waits until
# this pass has written a few hundred blocks to the array and then fails a member. It must
# finish without an I/O error or a crc mismatch.
echo "@@FAIL-A-MEMBER@@"
fio --name=degrade --filename="$DEV" --rw=randwrite --do_verify=1 --offset=16m $FIO --size=32m \
  > /tmp/fio2 2>&1 &
FIOPID=$!
wait $FIOPID || { cat /tmp/fio2; fail fio-verify-during-member-failure; }
grep -q "^3;" /tmp/fio2 || { cat /tmp/fio2; fail fio-terse-output; }
ok fio-verify-during-member-failure

# Step 3: everything written before and during the failure reads back from the degraded
# array (reconstructed from parity where the failed member held it).
fio --name=healthy --filename="$DEV" --rw=randwrite --verify_only $FIO > /tmp/fio3 2>&1 \
  || { cat /tmp/fio3; fail fio-verify-only-degraded-step1; }
fio --name=degrade --filename="$DEV" --rw=randwrite --offset=16m --verify_only $FIO --size=32m \
  > /tmp/fio4 2>&1 || { cat /tmp/fio4; fail fio-verify-only-degraded-step2; }
ok fio-verify-only-degraded

# Step 4: fresh writes on the degraded array verify too.
fio --name=after --filename="$DEV" --rw=randwrite --do_verify=1 --offset=48m $FIO > /tmp/fio5 2>&1 \
  || { cat /tmp/fio5; fail fio-verify-degraded-writes; }
ok fio-verify-degraded-writes

nvme disconnect -n "$NVME_NQN" || fail disconnect
ok disconnect
dmesg | grep -i -E "nvme" | tail -20
echo "ALL CHECKS PASSED"
