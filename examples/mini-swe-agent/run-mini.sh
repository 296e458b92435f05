#!/bin/sh
# spec.agent.command for mini-swe-agent: the trial's prompt as its task, the trial's model (through
# agentmatrix's per-trial proxy: OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODEL), no questions asked,
# no cost bookkeeping for a local model, and no network look-ups at start.
here="$(dirname "$0")"
export MSWEA_CONFIGURED=true MSWEA_COST_TRACKING=ignore_errors LITELLM_LOCAL_MODEL_COST_MAP=True
exec "$here/bin/mini" --yolo --exit-immediately --model-class litellm_textbased \
  -c mini_textbased.yaml -c "$here/agentmatrix-mini.yaml" \
  -m "openai/$OPENAI_MODEL" -t "$(cat "$AGENTMATRIX_PROMPT_FILE")" </dev/null
