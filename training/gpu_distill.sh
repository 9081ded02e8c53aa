#!/usr/bin/env bash
# One device-tool call (issue 9): train the wide teacher on a CUDA GPU, then distil the student from it.
#
# Run from the repository root with the FER2013 pack carried (see README, "Training, calibration, INT8"):
#     emostream pack-fer -o packed/fer2013.npz          # here, once (55.6 MiB; packed/ is git-ignored)
#     run(command="bash training/gpu_distill.sh", carry=["packed"], timeout_s=600)
# Checkpoints and logs land in $OUT (the device tool's return folder), at most 8 files of <= 16 MiB:
#     $OUT/teacher/best.pt (fp16 weights, ~9 MiB), $OUT/teacher/log.jsonl,
#     $OUT/student/best.pt, $OUT/student/log.jsonl, $OUT/gpu_distill.log
# Everything is a variable so a later session can re-balance the ~9 minutes without editing the file.
set -euo pipefail

PACK=${PACK:-packed/fer2013.npz}
OUT=${OUT:-runs/gpu_distill}               # the device tool sets OUT; elsewhere a run folder
WORK=${WORK:-runs/gpu_work}                 # full checkpoints (teacher last.pt is ~38 MB: too big to return)
PY=${PYTHON:-python3}
TEACHER_ARCH=${TEACHER_ARCH:-teacher}       # training/models.py ARCHS: teacher (469M MACs) or teacher_s
TEACHER_EPOCHS=${TEACHER_EPOCHS:-100}
TEACHER_BUDGET=${TEACHER_BUDGET:-280}       # seconds of wall-clock training (LR annealed within it)
STUDENT_INIT=${STUDENT_INIT:-student}       # shipped weights (registered name), a checkpoint, or "scratch"
STUDENT_EPOCHS=${STUDENT_EPOCHS:-150}
STUDENT_BUDGET=${STUDENT_BUDGET:-170}
BATCH=${BATCH:-512}
TEACHER_LR=${TEACHER_LR:-0.4}               # 0.1 x 512/128: the CPU recipe's LR, linearly scaled
STUDENT_LR=${STUDENT_LR:-}                  # default: 0.2 from the shipped weights (the recipe's warm-restart
                                            # 0.05 x 512/128), 0.4 from scratch
DEVICE=${DEVICE:-cuda}                      # cpu only to rehearse the script here (with LIMIT and tiny budgets)
LIMIT=${LIMIT:-0}                           # > 0: train on a seeded sample of N faces (rehearsals)
ALPHA=${ALPHA:-0.5}
TEMPERATURE=${TEMPERATURE:-2}
STUDENT_ARCH=${STUDENT_ARCH:-student_l}     # the shipped arch; a narrower STUDENT_INIT is widened (Net2WiderNet)
CAMERA_AUG=${CAMERA_AUG:-0}                 # 1: --camera-aug for teacher and student (blur, low-res, noise, JPEG)
TEACHER_FLIP=${TEACHER_FLIP:-0}             # 1: the student's KD target averages the teacher over each batch and its mirror
MIXUP=${MIXUP:-0}                           # > 0: the student's --mixup alpha (e.g. 0.3); 0 = off
LIGHT_AUG=${LIGHT_AUG:-0}                   # 1: --light-aug for teacher and student (exposure: gamma and gain)
STUDENT_EMA=${STUDENT_EMA:-0}               # > 0: the student's --ema decay (selects and returns the average)
ENGINE_BENCH=${ENGINE_BENCH:-1}             # 1: then time the shipped networks on this device (gpu_engine_bench.py)

fail() { echo "gpu_distill: error: $*" >&2; exit 2; }
aug=()
case $CAMERA_AUG in 0) ;; 1) aug=(--camera-aug) ;; *) fail "CAMERA_AUG must be 0 or 1, got $CAMERA_AUG" ;; esac
case $LIGHT_AUG in 0) ;; 1) aug+=(--light-aug) ;; *) fail "LIGHT_AUG must be 0 or 1, got $LIGHT_AUG" ;; esac
case $ENGINE_BENCH in 0|1) ;; *) fail "ENGINE_BENCH must be 0 or 1, got $ENGINE_BENCH" ;; esac
[[ $STUDENT_EMA =~ ^0([.][0-9]+)?$ ]] || fail "STUDENT_EMA must be a decay in [0, 1) (0 = off), got $STUDENT_EMA"
[[ $MIXUP =~ ^[0-9]+([.][0-9]+)?$ ]] || fail "MIXUP must be a number >= 0 (0 = off), got $MIXUP"
kd=(--mixup "$MIXUP" --ema "$STUDENT_EMA")
case $TEACHER_FLIP in 0) ;; 1) kd+=(--teacher-flip) ;; *) fail "TEACHER_FLIP must be 0 or 1, got $TEACHER_FLIP" ;; esac
say() { echo "gpu_distill: $(date -u +%H:%M:%S) $*"; }

[[ -f $PACK ]] || fail "pack not found: $PACK (run \`emostream pack-fer -o $PACK\` here and carry its folder)"
[[ -f training/gpu_distill.sh ]] || fail "run me from the repository root (training/gpu_distill.sh not found)"
command -v "$PY" >/dev/null || fail "python not found: $PY (set PYTHON)"
mkdir -p "$OUT/teacher" "$OUT/student" "$WORK"
exec > >(tee -a "$OUT/gpu_distill.log") 2> >(tee -a "$OUT/gpu_distill.log" >&2)

# The repository's layer folders install as emostream.<layer>; with nothing installed there, build that
# namespace from symbolic links, first on sys.path.
REPO=$(pwd)
NS=$(mktemp -d)
mkdir "$NS/emostream"
ln -s "$REPO"/emostream/*.py "$NS/emostream/"
for layer in streams edge engines calibration reasoner training; do ln -s "$REPO/$layer" "$NS/emostream/$layer"; done
emostream() { PYTHONUNBUFFERED=1 "$PY" -c "import sys; sys.path.insert(0, '$NS'); sys.argv[0] = 'emostream'; \
from emostream.edge.cli import main; sys.exit(main())" "$@"; }

"$PY" -c "import sys; sys.path.insert(0, '$NS'); import torch; import emostream.training.loop as m; \
assert m.__file__.startswith('$NS'), m.__file__; sys.exit(0 if torch.cuda.is_available() or '$DEVICE' == 'cpu' else 3)" \
    || fail "CUDA is not available to $PY (torch without a GPU?), or emostream does not import (see above)"
if [[ $DEVICE != cpu ]]; then
    "$PY" -c "import torch; p = torch.cuda.get_device_properties(0); print('gpu_distill: torch', torch.__version__, \
'on', p.name, f'{p.total_memory / 2**30:.0f} GiB')"
fi

say "teacher: --arch $TEACHER_ARCH, $TEACHER_EPOCHS epochs max, budget ${TEACHER_BUDGET}s, batch $BATCH, lr $TEACHER_LR"
emostream train teacher --arch "$TEACHER_ARCH" --data "$PACK" --device "$DEVICE" --limit "$LIMIT" --batch-size "$BATCH" \
    --lr "$TEACHER_LR" --epochs "$TEACHER_EPOCHS" --time-budget "$TEACHER_BUDGET" --threads 4 --no-progress \
    "${aug[@]}" --out "$WORK/teacher"
cp "$WORK/teacher/log.jsonl" "$OUT/teacher/log.jsonl"
# Return the teacher's weights in fp16 (half the size; they load into the fp32 network unchanged in shape).
"$PY" -c "import torch; c = torch.load('$WORK/teacher/best.pt', map_location='cpu', weights_only=False); \
c['model'] = {k: v.half() if v.is_floating_point() else v for k, v in c['model'].items()}; \
c['stored_dtype'] = 'float16'; torch.save(c, '$OUT/teacher/best.pt')"
say "teacher done: $(tail -n 1 "$WORK/teacher/log.jsonl")"

init=()
if [[ $STUDENT_INIT != scratch ]]; then init=(--init "$STUDENT_INIT"); fi
lr=${STUDENT_LR:-$([[ $STUDENT_INIT == scratch ]] && echo 0.4 || echo 0.2)}
say "student: --arch $STUDENT_ARCH, init ${STUDENT_INIT}, KD alpha $ALPHA T $TEMPERATURE, budget ${STUDENT_BUDGET}s, \
batch $BATCH, lr $lr, camera aug $CAMERA_AUG, light aug $LIGHT_AUG, teacher flip $TEACHER_FLIP, mixup $MIXUP, \
EMA $STUDENT_EMA"
emostream distill --arch "$STUDENT_ARCH" --data "$PACK" --device "$DEVICE" --limit "$LIMIT" --teacher "$WORK/teacher/best.pt" "${init[@]}" \
    --alpha "$ALPHA" --temperature "$TEMPERATURE" --batch-size "$BATCH" --lr "$lr" --epochs "$STUDENT_EPOCHS" \
    --time-budget "$STUDENT_BUDGET" --threads 4 --no-progress "${aug[@]}" "${kd[@]}" --out "$WORK/student"
cp "$WORK/student/best.pt" "$WORK/student/log.jsonl" "$OUT/student/"
say "student done -> $OUT/student/best.pt (calibrate only if its val accuracy beats the shipped 0.6718)"
if [[ $ENGINE_BENCH == 1 ]]; then  # issue 11's GPU figures for the README: ~30 s
    say "engine on this device: benchmarks/gpu_engine_bench.py -> $OUT/gpu_engine_bench.json"
    "$PY" -c "import runpy, sys; sys.path.insert(0, '$NS'); sys.argv = ['gpu_engine_bench', '--device', '$DEVICE', '--models', 'student', 'v0', '--seconds', '1', '--json', '$OUT/gpu_engine_bench.json']; runpy.run_path('benchmarks/gpu_engine_bench.py', run_name='__main__')" || say "engine bench failed (see above)"
fi
rm -rf "$NS"
