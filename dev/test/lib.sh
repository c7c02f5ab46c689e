# Shared by the shell tests (dev/test/test_pipeline.sh, test_mpi.sh): source it after cd to the
# repository root. It counts checks in $passed and $failed.
passed=0; failed=0
check() { # name, status: the condition's exit status, taken before the name is expanded (a $(…) in the name sets $?)
  if [ "$2" = 0 ]; then echo "ok   $1"; passed=$((passed + 1)); else echo "FAIL $1"; failed=$((failed + 1)); fi
}
result() { grep '^RESULT' "$1" | sed 's/ minutes=.*//'; }
# two training states hold the same run at the same point: equal but for the wall time each stage
# took (doc/formats.md: 8-byte seconds per stage at bytes 640..679), and so their CRC32 (the last 4 bytes)
same_state() {
  "${PYTHON:-/usr/bin/python3}" -c 'import sys; a, b = (bytearray(open(f, "rb").read()) for f in sys.argv[1:3]); a[640:680] = b[640:680] = bytes(40); sys.exit(a[:-4] != b[:-4])' "$1" "$2"
}
