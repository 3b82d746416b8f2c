#!/usr/bin/env bash
# A real fax line on one machine: two iaxmodems dialling each other (no PBX), one HylaFAX
# spool with faxq, hfaxd and a faxgetty on each modem. As root.
#   fax-lab.sh start LAB HFAXD_PORT IAX_PORT_A IAX_PORT_B    (LAB: an empty directory)
#   fax-lab.sh stop LAB
#   fax-lab.sh stop-modem LAB B    (kill -9 modem B's iaxmodem: the line drops)
#   fax-lab.sh stop-getty LAB B    (stop faxgetty on B: B rings and nobody answers)
#   fax-lab.sh stop-faxq LAB       (stop the scheduler: jobs wait in sendq)
# HylaFAX logs only through syslog: on a host without one (no /dev/log) the lab listens
# there itself for its lifetime and keeps what faxq, faxgetty and faxsend say in
# <LAB>/syslog (ServerTracing 0xFFFFF: every job, modem and FIFO message).
# Modem A is <LAB>/ttyA ("ModemA", number 5551001), B is <LAB>/ttyB ("ModemB", 5551002).
# HylaFAX names a modem by its device path with '/' as '_'. PIDs in <LAB>/*.pid.
set -u
cmd=$1 LAB=$2
S=$LAB/spool
id_of() { echo "$LAB/tty$1" | tr / _; }
stop_pid() { # name: TERM, then KILL after 3 s, to its process group (faxq's faxsend too)
  local f=$LAB/$1.pid; [ -f "$f" ] || return 0
  local p; p=$(cat "$f"); kill -- "-$p" 2>/dev/null || kill "$p" 2>/dev/null
  for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
  kill -9 -- "-$p" 2>/dev/null; kill -9 "$p" 2>/dev/null; rm -f "$f"
}
case $cmd in
start)
  PORT=$3 PA=$4 PB=$5
  if [ ! -e /dev/log ]; then
    python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("/dev/log"); os.chmod("/dev/log", 0o666)
out = open(sys.argv[1], "a", buffering=1)
while True:
    out.write(s.recv(65536).decode(errors="replace") + "\n")
' "$LAB/syslog" > /dev/null 2>&1 < /dev/null & echo $! > "$LAB/syslog.pid"
    for _ in $(seq 1 100); do [ -S /dev/log ] && break; sleep 0.02; done
  fi
  chmod 755 "$LAB"; mkdir -p "$LAB/lock"; chown uucp:uucp "$LAB/lock"
  for m in A B; do
    if [ $m = A ]; then me=$PA peer=$PB num=1001; else me=$PB peer=$PA num=1002; fi
    cat > "$LAB/iax$m" <<CFG
device $LAB/tty$m
owner uucp:uucp
mode 660
port $me
refresh 0
server 127.0.0.1:$peer
peername modem$m
secret x
cidname Modem$m
cidnumber $num
codec slinear
CFG
    # iaxmodem reads its config relative to /etc/iaxmodem.
    setsid iaxmodem "../..$LAB/iax$m" > "$LAB/iax$m.log" 2>&1 < /dev/null & echo $! > "$LAB/iax$m.pid"
  done
  rm -rf "$S"; cp -a /var/spool/hylafax "$S"; cp -a /etc/hylafax/. "$S/etc/"
  cat >> "$S/etc/config" <<CFG
SendFaxCmd:		/usr/lib/hylafax/bin/faxsend
SendPageCmd:		/usr/lib/hylafax/bin/pagesend
LogFacility:		local7
ServerTracing:		0xFFFFF
UUCPLockDir:		$LAB/lock
CFG
  touch "$S/log/xferfaxlog"; chown uucp:uucp "$S/log/xferfaxlog"
  for m in A B; do
    [ $m = A ] && num=1001 || num=1002
    cat > "$S/etc/config.$(id_of $m)" <<CFG
ModemType:		Class1
Class1AdaptRecvCmd:	AT+FAR=1
Class1TMConnectDelay:	400
ModemResetCmds:		AT+VCID=1
RingsBeforeAnswer:	1
LocalIdentifier:	"Modem$m"
FAXNumber:		+1.800.555.$num
CountryCode:		1
AreaCode:		800
LongDistancePrefix:	1
InternationalPrefix:	011
DialStringRules:	etc/dialrules
SessionTracing:		0xFFF
CFG
  done
  for _ in $(seq 1 200); do [ -e "$LAB/ttyA" ] && [ -e "$LAB/ttyB" ] && break; sleep 0.05; done
  # faxq must be reading its FIFO before a faxgetty says its modem is ready: a message sent
  # before is lost, and faxq keeps every job for that modem waiting.
  rm -f "$S/FIFO"
  # faxq locks a modem (LCK..ttyA) before it hands a job to faxsend: in the lab's own lock
  # directory, shared with the faxgettys, so that a lab stopped mid-call cannot leave a lock
  # that keeps the next lab's modem A from ever being assigned.
  setsid /usr/sbin/faxq -D -q "$S" > "$LAB/faxq.log" 2>&1 < /dev/null & echo $! > "$LAB/faxq.pid"
  for _ in $(seq 1 400); do
    ls -l "/proc/$(cat "$LAB/faxq.pid")/fd" 2>/dev/null | grep -q "$S/FIFO" && break; sleep 0.05; done
  for m in A B; do
    setsid /usr/sbin/faxgetty -q "$S" "$LAB/tty$m" > "$LAB/getty$m.log" 2>&1 < /dev/null & echo $! > "$LAB/getty$m.pid"
  done
  /usr/sbin/hfaxd -d -q "$S" -l 127.0.0.1 -i "$PORT" > "$LAB/hfaxd.log" 2>&1 < /dev/null & echo $! > "$LAB/hfaxd.pid"
  ;;
stop-modem) stop_pid "iax$3" ;;
stop-getty) stop_pid "getty$3" ;;
stop-faxq) stop_pid faxq ;;
stop)
  for n in hfaxd gettyA gettyB faxq iaxA iaxB; do stop_pid $n; done
  if [ -f "$LAB/syslog.pid" ]; then stop_pid syslog; rm -f /dev/log; fi ;;
esac
