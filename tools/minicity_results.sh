#!/usr/bin/env bash
# Reproduce the runs behind docs/results/minicity.md: every method × benchmark × seed that the
# table reports, on MiniCity generated at the default scale, then the report itself.
#   bash tools/minicity_results.sh [DATA [RUNS]]      (defaults: data/minicity, runs/results)
# Each finished run's record — config.yaml, env.json, eval.json, metrics.jsonl, a few kB; no
# checkpoints — is copied to docs/results/runs/<benchmark>/<run>/ and committed: the report is
# written from those records, so it can be regenerated (and extended run by run) on any machine.
# Runs with a record are skipped and interrupted ones (single runs and pipelines) resumed, so the
# script can be stopped and started again; a run that fails leaves no record (the script goes on with
# the queue and exits 1 at the end, naming it). Methods can be picked with ONLY="daformer hrda" (run
# names below), in that order, and benchmarks with BENCHES="minicity_gta2cs" (e.g. to split the runs
# over parallel jobs).
# On 2 CPU cores, with the ImageNet-pretrained preset (EfficientNet-Lite0), a source-only run takes
# ~5 min and DAFormer ~12; HRDA, MIC, EBDA and TigDA cost more per step (docs/bench.md).
# The records of the previous table (random-init presets, MiniCity 1.0) are in docs/results/runs_v1/.
# Every run uses THREADS torch threads (default 1, so that two jobs can share 2 cores and every row
# that is compared shares the thread count). COMMIT=1 commits each record as it finishes, in the
# repository that holds RECORDS (so the runs can use a fixed clone while RECORDS is the main one's).
# Several copies of the script may run at once on one RUNS folder (e.g. two one-thread workers on
# 2 cores): each run is claimed with a lock file ($RUNS/<benchmark>/<run>_s<seed>.lock, flock), so
# the copies share the queue; a killed copy's claims are released with it.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/env.sh
DATA="${1:-data/minicity}"
RUNS="${2:-runs/results}"
SEEDS="${SEEDS:-0 1 2}"
THREADS="${THREADS:-1}"
RECORDS="$(realpath -m "${RECORDS:-docs/results/runs}")"
write_report() {
  local reports=() bench
  for bench in minicity_gta2cs minicity_cs2acdc minicity_synthia2cs minicity_cs2foggy minicity_gta_dg; do
    [[ -d "$RECORDS/$bench" ]] && reports+=("$RECORDS/$bench")
  done
  udaseg report "${reports[@]}" --out "${REPORT:-docs/results/minicity.md}" --claims \
    --diagnoses docs/results/minicity_diagnoses.yaml --title "MiniCity results" --notes docs/results/minicity_notes.md
}
if [[ "${REPORT_ONLY:-0}" == 1 ]]; then
  write_report
  exit 0
fi
mkdir -p "$RUNS"
(
  flock 9  # one copy generates and prepares the data; the others wait for it
  udaseg data minicity --out "$DATA" --quiet
  udaseg data prepare gta5 "$DATA/gta" >/dev/null       # rare class sampling statistics
  udaseg data prepare cityscapes "$DATA/cityscapes" >/dev/null
  udaseg data prepare synthia "$DATA/synthia" >/dev/null
) 9>"$RUNS/.data.lock"

GTA_MARGINS='benchmark.target.pseudo_margins=[8,60,8,8]'  # HRDA's v2 crop on Cityscapes targets
# run name | label in the report | benchmarks | config arguments
RECIPES=(
  # The controls on every benchmark (the preset's family): source-only, + the DACS augmentation, oracle.
  "source_only|source_only|minicity_gta2cs minicity_cs2acdc minicity_synthia2cs minicity_cs2foggy|method=source_only"
  "source_only_aug|source_only+aug|minicity_gta2cs minicity_cs2acdc minicity_synthia2cs minicity_cs2foggy|method=source_only_aug"
  "oracle|oracle|minicity_gta2cs minicity_cs2acdc minicity_synthia2cs minicity_cs2foggy|method=oracle"
  "daformer|daformer|minicity_gta2cs minicity_cs2acdc|minicity_rcs method=daformer_minicity"
  "daformer+mic|daformer+mic|minicity_gta2cs|minicity_rcs minicity_mic method=daformer_minicity"
  "daformer+mic|daformer+mic|minicity_cs2acdc|minicity_rcs minicity_mic method=daformer_minicity method.mic.mode=separate"
  "hrda|hrda|minicity_gta2cs|minicity_rcs minicity_hrda $GTA_MARGINS"
  "hrda|hrda|minicity_cs2acdc|minicity_rcs minicity_hrda"
  "hrda+mic|hrda+mic|minicity_gta2cs|minicity_rcs minicity_hrda minicity_mic $GTA_MARGINS"
  "hrda+mic|hrda+mic|minicity_cs2acdc|minicity_rcs minicity_hrda minicity_mic method.mic.mode=separate"
  # TigDA and EBDA against DAFormer on the benchmarks their papers use.
  "daformer|daformer|minicity_synthia2cs minicity_cs2foggy|minicity_rcs method=daformer_minicity"
  "daformer+tigda|daformer+tigda|minicity_gta2cs minicity_synthia2cs|minicity_rcs minicity_tigda method=daformer_minicity"
  "daformer+ebda|daformer+ebda|minicity_cs2acdc minicity_cs2foggy|minicity_rcs minicity_ebda method=daformer_minicity"
  # The two composed, on the benchmark where each helped alone.
  "daformer+tigda+ebda|daformer+tigda+ebda|minicity_gta2cs minicity_cs2acdc|minicity_rcs minicity_tigda minicity_ebda method=daformer_minicity"
  # The DeepLab-v2 family (issue 6) on its CPU stand-in model; pipelines give one record per stage.
  # On SYNTHIA → Cityscapes the family trains 16-way, as DAF's protocol (mIoU16, mIoU13).
  "source_only_deeplab|source_only|minicity_gta2cs|method=source_only model=minicity_lite0_deeplab"
  "source_only_deeplab|source_only|minicity_synthia2cs|method=source_only model=minicity_lite0_deeplab benchmark.label_space=synthia16"
  "source_only_aug_deeplab|source_only+aug|minicity_gta2cs|method=source_only_aug model=minicity_lite0_deeplab"
  "source_only_aug_deeplab|source_only+aug|minicity_synthia2cs|method=source_only_aug model=minicity_lite0_deeplab benchmark.label_space=synthia16"
  "oracle_deeplab|oracle|minicity_gta2cs|method=oracle model=minicity_lite0_deeplab"
  "oracle_deeplab|oracle|minicity_synthia2cs|method=oracle model=minicity_lite0_deeplab benchmark.label_space=synthia16"
  "advent|advent|minicity_gta2cs|minicity_advent"
  "advent|advent|minicity_synthia2cs|minicity_advent benchmark.label_space=synthia16"
  "bafft|bafft|minicity_gta2cs|minicity_bafft"
  "daf_ida|daf|minicity_synthia2cs|minicity_daf_ida"
  # DiGA (issue 7): the pipeline with the translator and with FDA, DG on unseen targets (and its
  # source-only control on the same model), semi-supervised at 1/8 labels (with its control).
  "source_only_proda|source_only|minicity_gta2cs|method=source_only model=minicity_lite0_deeplab_proda benchmark.batch_size=2 iters=400"
  "source_only_proda|source_only|minicity_synthia2cs|method=source_only model=minicity_lite0_deeplab_proda benchmark.batch_size=2 iters=400 benchmark.label_space=synthia16"
  "source_only_aug_proda|source_only+aug|minicity_gta2cs|method=source_only_aug model=minicity_lite0_deeplab_proda benchmark.batch_size=2 iters=400"
  "source_only_aug_proda|source_only+aug|minicity_synthia2cs|method=source_only_aug model=minicity_lite0_deeplab_proda benchmark.batch_size=2 iters=400 benchmark.label_space=synthia16"
  "oracle_proda|oracle|minicity_gta2cs|method=oracle model=minicity_lite0_deeplab_proda benchmark.batch_size=2 iters=400"
  "oracle_proda|oracle|minicity_synthia2cs|method=oracle model=minicity_lite0_deeplab_proda benchmark.batch_size=2 iters=400 benchmark.label_space=synthia16"
  "diga_warmup_photometric|diga_warmup_photometric|minicity_gta2cs|method=diga model=minicity_lite0_deeplab_proda method.styling=none benchmark.batch_size=2 iters=400"
  "diga_warmup_photometric|diga_warmup_photometric|minicity_synthia2cs|method=diga_synthia model=minicity_lite0_deeplab_proda method.styling=none method.ohem_min_kept=10000 benchmark.batch_size=2 iters=400 benchmark.label_space=synthia16"
  "diga|diga|minicity_gta2cs|minicity_diga"
  "diga_fda|diga_fda|minicity_gta2cs|minicity_diga_fda"
  "diga_synthia|diga_fda|minicity_synthia2cs|minicity_diga_synthia"
  "diga_dg|diga_dg|minicity_gta_dg|minicity_diga_dg"
  "dg_source_only|source_only|minicity_gta_dg|minicity_diga_dg method=source_only"
  "diga_semisup|diga_semisup|minicity_gta2cs|minicity_diga_semisup"
)
run_recipe() {  # name label benches args
  local name=$1 label=$2 benches=$3 args=$4 seed bench out record
  for seed in $SEEDS; do
    for bench in $benches; do
      [[ -n "${BENCHES:-}" && " $BENCHES " != *" $bench "* ]] && continue
      out="$RUNS/$bench/${name}_s$seed"
      record="$RECORDS/$bench/${name}_s$seed"
      [[ -f "$record/eval.json" ]] && continue
      mkdir -p "$RUNS/$bench"
      exec 8>"$out.lock"
      flock -n 8 || continue  # another copy of the script has this run
      [[ -f "$record/eval.json" ]] && { exec 8>&-; continue; }  # it finished while we looked
      if [[ ! -f "$out/eval.json" ]]; then
        if [[ -d "$out/checkpoints" || -d "$out/stages" ]]; then  # a run, or a pipeline, that was stopped
          udaseg train --resume --out "$out" --quiet || true
        else
          rm -rf "$out"  # stopped before its first checkpoint (or never started): from the beginning
          # shellcheck disable=SC2086
          udaseg train minicity_cpu $args benchmark="$bench" seed="$seed" data_root="$DATA" \
            method.label="$label" threads="$THREADS" --out "$out" --quiet || true
        fi
      fi
      if [[ ! -f "$out/eval.json" ]]; then  # failed or killed: no record; the next copy of the script retries
        echo "minicity_results: $out did not finish (no eval.json): no record written" >&2
        FAILED+=("$out")
        exec 8>&-
        continue
      fi
      rm -rf "$record.tmp" && mkdir -p "$record.tmp"
      if [[ -f "$out/pipeline.json" ]]; then  # a pipeline: every stage's record, and the step summaries
        cp "$out"/{config.yaml,env.json,eval.json,pipeline.json} "$record.tmp/"
        for stage in "$out"/stages/*/; do
          mkdir -p "$record.tmp/stages/$(basename "$stage")"
          for f in config.yaml env.json eval.json metrics.jsonl summary.json stage_done.json easy.txt hard.txt; do
            [[ -f "$stage/$f" ]] && cp "$stage/$f" "$record.tmp/stages/$(basename "$stage")/"
          done
        done
      else
        cp "$out"/{config.yaml,env.json,eval.json,metrics.jsonl} "$record.tmp/"
      fi
      rm -rf "$record" && mv "$record.tmp" "$record"
      if [[ "${COMMIT:-0}" == 1 ]]; then  # retried: other work may hold the index lock for a moment
        for _ in 1 2 3 4 5; do
          git -C "$RECORDS" add "$record" && git -C "$RECORDS" commit -q -m "Run record: $name on $bench, seed $seed ($(python -c \
            'import json,sys; r=json.load(open(sys.argv[1])); m=r.get("metric","mIoU19"); v=r.get(m); print(f"{m} {100*v:.1f}" if v is not None else "no score")' \
            "$record/eval.json"))" -- "$record" && break
          sleep 5
        done
      fi
      exec 8>&-
    done
  done
}
FAILED=()
for want in ${ONLY:-ALL}; do
  for recipe in "${RECIPES[@]}"; do
    IFS='|' read -r name label benches args <<<"$recipe"
    if [[ "$want" == ALL || "$want" == "$name" ]]; then
      run_recipe "$name" "$label" "$benches" "$args"
    fi
  done
done
write_report
if (( ${#FAILED[@]} )); then
  echo "minicity_results: ${#FAILED[@]} run(s) did not finish: ${FAILED[*]}" >&2
  exit 1
fi
