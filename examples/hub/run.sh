#!/usr/bin/env bash
# Hub round trip against $HF_ENDPOINT with $HF_TOKEN: publish a tiny zoo, merge it by repo id, evaluate, push.
set -euo pipefail
namespace=${1:?usage: run.sh NAMESPACE}
workdir=${WORKDIR:-$(mktemp -d)}
python "$(dirname "$0")/publish_zoo.py" "$namespace" "$workdir"
r2m-hf check-specialist "$namespace/r2m-demo-fe-lora" --base "$namespace/r2m-demo-backbone"
r2m-hf merge "$workdir/merge.yaml" "$workdir/merged" --push-to-hub "$namespace/r2m-demo-merged"
r2m-hf eval "$namespace/r2m-demo-merged" --dataset "$workdir/eval-data" --family-column family
python -c "from huggingface_hub import ModelCard; print(ModelCard.load('$namespace/r2m-demo-merged').data.to_dict()['tags'])"
