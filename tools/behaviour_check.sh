#!/usr/bin/env bash
# Behaviour fingerprint for refactors: fixed-seed 20-iteration runs of source-only, DAFormer,
# DAFormer + MIC and HRDA on a small MiniCity (tiny CNN, one thread, deterministic), and the
# sha256 of each run's eval.json and of its logged losses (metrics.jsonl without times). Run before and after a refactor; the lists must be identical.
#   bash tools/behaviour_check.sh [WORKDIR]      (default /tmp/udaseg_behaviour; ~3 min on 2 cores)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/tools/env.sh"
work="${1:-/tmp/udaseg_behaviour}"
mkdir -p "$work"
[[ -d "$work/data/cityscapes" ]] || udaseg data minicity --out "$work/data" --size 64x128 --scale small --seed 0 --quiet >/dev/null
common=(benchmark=minicity_gta2cs schedule=minicity model=minicity_cnn model.head=segformer
        model.backbone_options.width=8 "model.backbone_options.depths=[1,1,1,1]" "model.head_options={embed_dim: 16}"
        "data_root=$work/data" iters=20 seed=3 benchmark.batch_size=2 "benchmark.source.crop_size=[32,64]"
        "benchmark.target.crop_size=[32,64]" schedule.warmup_iters=2 log_every=5 checkpoint_every=10 eval_every=0
        workers=0 threads=1 deterministic=true)
run() {  # name, extra args...
    local name=$1; shift
    rm -rf "$work/runs/$name"
    udaseg train "${common[@]}" "$@" --out "$work/runs/$name" --quiet >/dev/null
    local losses
    losses=$(python -c 'import json, sys; [print({k: v for k, v in json.loads(l).items() if k != "time"})
                                            for l in open(sys.argv[1])]' "$work/runs/$name/metrics.jsonl" | sha256sum | cut -c1-16)
    echo "$name eval.json $(sha256sum < "$work/runs/$name/eval.json" | cut -c1-16) losses $losses"
}
run source_only method=source_only
st=(method.pseudo_ignore_top=2 method.pseudo_ignore_bottom=8)
run daformer method=daformer_minicity "${st[@]}"
run daformer_mic method=daformer_minicity "${st[@]}" method.mic=true method.mic.block_size=8
run hrda method=hrda_minicity "${st[@]}" model=minicity_cnn_hrda "model.hrda.hr_crop_size=[16,32]" \
    "model.hrda.hr_slide_stride=[8,16]" "model.hrda.test_window=[32,64]" "model.hrda.test_stride=[16,32]" \
    model.hrda.attention_embed_dim=16
