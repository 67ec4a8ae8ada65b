#!/usr/bin/env bash
# Installs the real peers the integration tests start themselves: OBS Studio (under Xvfb), JACK (MIDI ports),
# Chromium, ffmpeg, PortAudio. Debian/Ubuntu; does nothing when everything is already there.
set -euo pipefail
need=()
for pair in obs:obs-studio Xvfb:xvfb jackd:jackd2 jack_wait:jackd2 chromium:chromium ffmpeg:ffmpeg; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need+=(libportaudio2)
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing test peers: ${need[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
