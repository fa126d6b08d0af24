#!/usr/bin/env bash
# Quality work for experiment=applewatch_loso: one-factor-at-a-time runs of the study, each reported under
# experiments/applewatch/ablations/<name>/: the per-client Base model for the classifier settings (no
# pretraining needed), fm_probe (a frozen FM per subject fold) for the pretraining settings.
# Reference (run context_5): context_epochs=5, no clock proxy (model.time_of_night=false), class-weighted
# loss, night_scale heart rate, the default deepsense encoder; every other run changes one of these. The FM
# runs' reference (fm_reference) pretrains with the subject adversary and the default augmentations.
# The main study's report (experiments/applewatch/results.md) gathers them in its "Quality work" section.
#   bash experiments/applewatch/ablations.sh [sleep-accel root] [name ...]
set -euo pipefail
set -f  # no globbing: overrides such as loss=[focal,subject_adversary] are passed as written
ROOT="${1:-../shared/data/sleep-accel}"; shift || true
PY="${PY:-.venv/bin/python}"
declare -A RUNS=(
  [context_0]="dataset.datamodule.context_epochs=0"
  [context_5]=""
  [context_10]="dataset.datamodule.context_epochs=10"
  [unweighted_loss]="model.class_weighted_loss=false"
  [time_of_night]="model.time_of_night=true"
  [hr_walch_dog]="dataset.preprocess.hr_normalisation=walch_dog dataset.cache_root=data/cache/applewatch/ablation-hr-walch-dog"
  [encoder_small]="encoder.conv_channels=16 encoder.gru_hidden=32 encoder.embedding_dim=32"
  [encoder_large]="encoder.conv_channels=64 encoder.gru_hidden=128 encoder.embedding_dim=128"
  [hr_only]="dataset.datamodule.modalities=[hr]"
  [fm_reference]="loss=[focal,subject_adversary] augment=default"
  [fm_no_augment]="loss=[focal,subject_adversary] augment=none"
  [fm_no_adversary]="loss=focal augment=default"
  [fm_no_adversary_no_augment]="loss=focal augment=none"
)
declare -A MODELS=([fm_reference]="[fm_probe]" [fm_no_augment]="[fm_probe]" [fm_no_adversary]="[fm_probe]"
                   [fm_no_adversary_no_augment]="[fm_probe]")
NAMES=("$@"); [ ${#NAMES[@]} -gt 0 ] || NAMES=(context_0 context_5 context_10 time_of_night unweighted_loss hr_walch_dog encoder_small encoder_large hr_only fm_reference fm_no_augment fm_no_adversary fm_no_adversary_no_augment)
for name in "${NAMES[@]}"; do
  echo "== ablation $name: ${RUNS[$name]}"
  # shellcheck disable=SC2086
  REF="model.time_of_night=false"; [ "$name" = time_of_night ] && REF=""
  "$PY" -m fm_bio.run experiment=applewatch_loso dataset.root="$ROOT" "loso.models=${MODELS[$name]:-[base]}" $REF ${RUNS[$name]} \
    report.figures=false report.out_dir=experiments/applewatch/ablations/$name \
    hydra.run.dir=outputs/loso/applewatch-ablations/$name
done
