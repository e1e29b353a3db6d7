#!/bin/sh
# Regenerates bench/figures/: the DTO-EE paper's settings (seed 0) simulated with DTO-EE and
# the baselines: delay/accuracy vs arrival rate and vs capacity, dynamic slots (Section 4.1-4.3
# setting), and DTO-EE with and without threshold tuning (Section 4.4's homogeneous setting).
# Then prints the README table (bench/paper_table.py).
# Usage: sh bench/paper_figures.sh [OUT_DIR] [DURATION_S]
set -e
out=${1:-bench/figures}
duration=${2:-200}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for setting in paper-resnet101 paper-bert; do
    case $setting in
        paper-resnet101) rates=3.6,4.2,4.8,5.4,6.0 ;;
        *) rates=1.2,1.6,2.0,2.4,2.8 ;;
    esac
    edge-agent scenario $setting -o "$tmp/$setting.json" > /dev/null
    edge-agent scenario $setting --homogeneous -o "$tmp/$setting-homogeneous.json" > /dev/null
    edge-agent --log-level WARNING simulate --scenario "$tmp/$setting.json" --rates $rates \
        --scales 0.65,0.8,1,1.25,1.5 --dynamic-slots 40 --duration "$duration" \
        --out "$out/$setting"
    edge-agent --log-level WARNING simulate --scenario "$tmp/$setting-homogeneous.json" \
        --policies dtoee --threshold-study --duration "$duration" \
        --out "$out/$setting-homogeneous"
done
python3 "$(dirname "$0")/paper_table.py" "$out"
