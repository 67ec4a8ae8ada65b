#!/usr/bin/env bash
# Trains vprod's world model from nothing: renders the datasets, trains the tokenizer, then the dynamics in the six
# stages the shipped weights went through (step counts as they ran; the shipped runs stopped on --minutes, which
# gave these counts on this project's 2-core CPU machine), then the look head. Every stage shows a progress bar,
# resumes from its checkpoint if stopped, and writes loss.png. About 6 h on two CPU cores; minutes on a GPU (add
# --device cuda to the train commands).
#
#   scripts/train-world-model.sh            # then: cp runs/tok1/tokenizer.safetensors runs/world6/world.safetensors
#                                           #       runs/look1/look.safetensors runs/motion1/motion.json
#                                           #       runs/prompt1/prompt.safetensors vprod/world/weights/
set -euo pipefail
VPROD=${VPROD:-.venv/bin/vprod}
DATA=${DATA:-data/worlds}
KNOBS=${KNOBS:-data/knobs}
RUNS=${RUNS:-runs}
TOK=$RUNS/tok1/tokenizer.safetensors
W=(world --data "$DATA" --tokenizer "$TOK" --clips 700 --no-control-film)  # stages 1-4

"$VPROD" data render --out "$DATA" --clips 1200 --frames 64 --seed 1
"$VPROD" train tokenizer --data "$DATA" --out "$RUNS/tok1" --steps 2500 --threads 1
# 1-2: a plain flow model (flow matching + shortcut self-consistency), then a fine-tune at a lower rate
"$VPROD" train "${W[@]}" --out "$RUNS/world1" --steps 2521 --threads 2 --no-residual --guide 0 --rollout 0
"$VPROD" train "${W[@]}" --out "$RUNS/world2" --steps 639 --lr 5e-4 --threads 2 --no-residual --guide 0 --rollout 0 \
  --init "$RUNS/world1/world.safetensors"
# 3: turned residual (the change from the previous frame, which is also an input), self-rollouts after 30 %
"$VPROD" train "${W[@]}" --out "$RUNS/world3" --steps 266 --lr 5e-4 --threads 2 --guide 0 --rollout 0.25 \
  --init "$RUNS/world2/world.safetensors"
# 4: + distilled guidance (20 % of windows learn the model's own classifier-free-guided velocity), longer
"$VPROD" train "${W[@]}" --out "$RUNS/world4" --steps 3131 --lr 5e-4 --threads 1 --rollout 0.3 \
  --init "$RUNS/world3/world.safetensors"
# 5: + control FiLM (the controls and their change on every token), half the clips from the knobs schedule
"$VPROD" data render --out "$KNOBS" --clips 600 --frames 64 --seed 2 --schedule knobs
"$VPROD" train world --data "$DATA,$KNOBS" --tokenizer "$TOK" --clips 700 --out "$RUNS/world5" --steps 3420 \
  --lr 3e-4 --threads 2 --rollout 0.3 --init "$RUNS/world4/world.safetensors"
# 6: rollouts made as at run time (sampler noise 0.75, 1-2 steps, context noise), five frames deep, and the
#    latent-statistics term: the frames sampled from that context keep the true frames' colour, spread and layout
"$VPROD" train world --data "$DATA,$KNOBS" --tokenizer "$TOK" --clips 700 --out "$RUNS/world6" --steps 701 \
  --lr 2e-4 --threads 1 --window 6 --rollout 0.5 --rollout-start 0 --rollout-depth 5 --rollout-temp 0.75 \
  --rollout-steps 2 --rollout-noise --stats 2 --init "$RUNS/world5/world.safetensors"
# the camera head (opt-in at run time): how the motion knobs move the picture, fitted on rendered clips (~3 min)
"$VPROD" train motion --out "$RUNS/motion1" --clips 64
# the look head: a knob's instant change of the picture, learned from the same moment drawn under two controls
# (each layer also sees the picture's mean features; dilated layers; half the batches with the memory's 9 mirrored
# rows above and below, as the head sees the memory's canvas)
"$VPROD" train look --tokenizer "$TOK" --out "$RUNS/look1" --threads 2 --pooled --dilations 1,2,4 --look-pad 9 \
    --steps 6000 --states 3000
# the prompt head: the family and knob offsets a prompt's words describe, fitted on the renderer's captions (~1 min)
"$VPROD" train prompt --out "$RUNS/prompt1"
