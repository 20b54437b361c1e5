"""The trainer's config schema with TempR1's GRPO recipe as defaults.

TempR1 says its GRPO hyperparameters "follow VideoChat-R1", which runs TRL 0.15.1's GRPOTrainer with its
defaults under the HF Trainer's defaults (TempR1's paper, section 3.2). Each value below names its
source: [VC-R1] = VideoChat-R1's training script, [TRL] = TRL 0.15.1 GRPOConfig default, [HF] = HF
TrainingArguments default (which TRL inherits), [SPEC] = the reward and completion rules (docs/rewards.md),
[ours] = this project's choice.

Experiment configs (configs/demo.py, configs/tempr1_7b.py...) build on this one and add the model, data and
rollout blocks. Override anything from the command line: ``--config.grpo.beta=0``.
"""

import ml_collections
from ml_collections import config_dict

from data_pipeline import stream


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # [ours] PRNG seed of the run (sampling keys); VideoChat-R1 passes --data_seed 42 to its data sampler
    c.seed = 0

    # Device mesh: sizes of the (data, fsdp, tp) axes; -1 takes all remaining devices. [ours]
    c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tp=1))

    # Multi-process start (tempr1_jax.sharding.maybe_initialize_distributed). "auto" initializes
    # jax.distributed when the environment or these fields say there are several processes. [ours]
    c.distributed = ml_collections.ConfigDict()
    c.distributed.mode = "auto"
    c.distributed.coordinator_address = config_dict.placeholder(str)
    c.distributed.num_processes = config_dict.placeholder(int)
    c.distributed.process_id = config_dict.placeholder(int)

    c.train = ml_collections.ConfigDict()
    c.train.prompts_per_step = 8  # [VC-R1] 8 GPUs x per_device_train_batch_size 1, grad accumulation 1
    c.train.num_epochs = 1  # [VC-R1] --num_train_epochs 1; TempR1: 1 epoch over ~60K samples
    c.train.total_steps = config_dict.placeholder(int)  # [ours] None: num_epochs over the data stream
    c.train.micro_batches = 1  # [VC-R1] --gradient_accumulation_steps 1 (gradient accumulation slices)
    c.train.steps_per_run = 0  # [ours] stop with a checkpoint after N steps of this invocation (0: to the end)
    c.train.max_consecutive_skips = 20  # [ours] stop when this many updates in a row are non-finite
    # [ours] resume even when a new total_steps changes the learning-rate schedule (refused otherwise)
    c.train.allow_schedule_change = False

    # optax AdamW + schedule (tempr1_jax.trainer.make_optimizer). Steps count optimizer updates.
    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.learning_rate = 1e-6  # [TRL] GRPOConfig.learning_rate default (not passed by VC-R1)
    c.optimizer.b1 = 0.9  # [HF] adam_beta1
    c.optimizer.b2 = 0.999  # [HF] adam_beta2
    c.optimizer.eps = 1e-8  # [HF] adam_epsilon
    c.optimizer.weight_decay = 0.0  # [HF] weight_decay
    c.optimizer.max_grad_norm = 1.0  # [HF] max_grad_norm (0 disables clipping)
    c.optimizer.warmup_steps = 0  # [HF] warmup_steps / warmup_ratio 0
    c.optimizer.decay = "linear"  # [HF] lr_scheduler_type "linear" (to 0 at the end); or cosine, constant
    c.optimizer.end_factor = 0.0  # [HF] linear decay ends at 0
    c.optimizer.freeze = ""  # [ours] regex of param paths to freeze (e.g. the vision tower); "" trains all

    # The GRPO objective (tempr1_jax.grpo.GRPOConfig; the field names are the same).
    c.grpo = ml_collections.ConfigDict()
    c.grpo.num_generations = 8  # [VC-R1] --num_generations 8 (G)
    c.grpo.beta = 0.04  # [TRL] beta default; 0 drops the KL and the reference model
    c.grpo.kl_estimator = "k3"  # [TRL] k3 = exp(ref - logp) - (ref - logp) - 1
    c.grpo.eps_low = 0.2  # [TRL] epsilon (a no-op with num_iterations 1: the ratio is 1)
    c.grpo.eps_high = 0.2  # [TRL] epsilon (DAPO uses 0.28)
    c.grpo.aggregation = "seq_mean_token_mean"  # [TRL] token mean per completion, then mean (paper's GRPO)
    c.grpo.importance_level = "token"  # [TRL] per-token ratio ("sequence" = GSPO)
    c.grpo.num_iterations = 1  # [TRL] one policy update per rollout batch (mu)
    c.grpo.advantage_scale = "group"  # [TRL] (r - mean_g) / (std_g + eps)
    c.grpo.advantage_eps = 1e-4  # [TRL] the eps added to the std
    c.grpo.advantage_ddof = 1  # [TRL] torch's unbiased std
    c.grpo.norm_constant = config_dict.placeholder(int)  # [ours] Dr.GRPO constant; None: completion length
    c.grpo.dynamic_sampling = False  # [DAPO] True: draw prompts until every kept group has varying rewards
    c.grpo.max_draws_per_step = 4  # [ours] cap on stream batches per step with dynamic_sampling (verl: unbounded)

    # Checkpoints (tempr1_jax.checkpoint.Checkpointer). Also saved on SIGTERM and at the last step.
    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 200  # [ours] steps between saves
    c.checkpoint.keep = 3  # [ours] last N kept
    c.checkpoint.async_save = True  # [ours] write in the background
    c.checkpoint.save_ref_params = False  # [ours] the reference is the initial model, reloaded on resume

    c.logging = ml_collections.ConfigDict()
    c.logging.every = 1  # [ours] console line and TensorBoard scalars every N steps
    c.logging.tensorboard = True  # [ours] event files under <workdir>/tensorboard
    c.logging.samples_every = 50  # [ours] sample completions as TensorBoard text every N steps
    c.logging.num_samples = 4  # [ours] completions per sample table
    c.logging.sample_chars = 600  # [ours] completions are cut to this many characters in the table
    # [ours] Weights & Biases (pip install -e '.[wandb]'): the same scalars, sample tables, the config; off while
    # project is "". The run id is kept in <workdir>/wandb_run_id (a resumed run attaches to it); WANDB_MODE=offline
    # writes only under <workdir>/wandb/.
    c.logging.wandb = ml_collections.ConfigDict(dict(project="", entity="", name="", tags=()))

    # Rewards: the keyword arguments of tempr1_jax.rewards.compute_rewards.
    c.reward = ml_collections.ConfigDict()
    c.reward.think = "optional"  # [SPEC] think modes: "optional" (default), "required" or "forbidden"
    c.reward.weights = ml_collections.ConfigDict(dict(format=1.0, localization=1.0, answer=1.0))  # [SPEC] total weights
    c.reward.sigma = 1.0  # [SPEC] tal count reward scale

    # The policy (tempr1_jax.models.qwen25vl). Either a local Hugging Face directory (config.json,
    # *.safetensors, tokenizer files) or a preset with random init (demo and tests).
    c.model = ml_collections.ConfigDict()
    c.model.path = config_dict.placeholder(str)  # [ours] e.g. /ckpt/Qwen2.5-VL-7B-Instruct (TempR1: 7B Instruct)
    c.model.preset = ""  # [ours] "tiny" (random init; sized by model.text / model.vision and the tokenizer)
    c.model.plan_preset = ""  # [ours] python -m tempr1_jax.plan: the shapes when model.path is not a local dir
    c.model.text = ml_collections.ConfigDict()  # [ours] TextConfig overrides of a preset, e.g. hidden_size
    c.model.vision = ml_collections.ConfigDict()  # [ours] VisionConfig overrides of a preset
    c.model.dtype = "bfloat16"  # [VC-R1] --bf16: compute dtype
    c.model.param_dtype = "float32"  # [HF] the Trainer keeps fp32 master weights under bf16 autocast
    c.model.attention_impl = config_dict.placeholder(str)  # [ours] None/"xla", or "cudnn" (GPU flash attention)
    c.model.attention_chunk = 0  # [ours] query rows per attention block (0: whole); bounds [B, H, L, L] memory
    c.model.remat = "none"  # [VC-R1] gradient checkpointing: "full"; "none" / "dots" are ours
    c.model.scan_layers = True  # [ours] one lax.scan over the blocks (fast compiles)
    c.model.freeze_vision = False  # [ours] True freezes the vision tower (Time-R1's --fix_vit)
    c.model.logprob_chunk = 256  # [ours] positions per log-prob block (no full [B, L, V] fp32 logits)
    # [ours] LoRA (tempr1_jax.models.qwen25vl.lora): adapters W + (alpha / rank) B A on the kernels whose param path
    # fully matches targets (the language model's projections by default; add "|visual/.*_kernel" for the vision
    # tower); only the adapters train, the KL reference is the base (adapters off). rank 0: off (the recipe).
    c.model.lora = ml_collections.ConfigDict(
        dict(rank=0, alpha=16.0, targets=r"text/layers/(q|k|v|o|gate|up|down)_kernel", dropout=0.0))
    # [ours] the packed vision batch's sizes round up to these multiples (patches, window / frame-pair blocks,
    # slots per frame-pair block): rope.bucket_vision_sizes' defaults, for real videos
    c.model.vision_multiples = (256, 8, 64)

    # The data stream (data_pipeline.stream.default_config: TempR1's 2 fps, 448 frames, 3584 visual tokens).
    # data.batch_size is set by the trainer: train.prompts_per_step / number of processes.
    c.data = stream.default_config()

    # Sampling the G completions per prompt (tempr1_jax.rollout.SamplingConfig).
    c.rollout = ml_collections.ConfigDict()
    c.rollout.max_new_tokens = 1024  # [VC-R1] --max_completion_length 1024
    c.rollout.temperature = 1.0  # [VC-R1] GenerationConfig(do_sample=True, temperature=1)
    c.rollout.top_p = 1.0  # [TRL] top_p default (no filter)
    c.rollout.top_k = 0  # [TRL] top_k default None (no filter)

    # Periodic evaluation on a held-out slice, the code of `python -m tempr1_jax.evaluate` (greedy decoding).
    c.eval = ml_collections.ConfigDict()
    c.eval.samples = ()  # [ours] held-out samples JSONL files (frames from data.frames); empty: no evaluation
    # [ours] more samples JSONL files decoded in full after eval.samples' slice (whole benchmarks, e.g. the general
    # multiple-choice ones; eval.max_samples does not apply to them)
    c.eval.extra_samples = ()
    c.eval.every = 0  # [ours] steps between evaluations (0: never during training)
    c.eval.at_start = True  # [ours] also before the first step (the "before" numbers) when eval.every > 0
    c.eval.max_samples = 0  # [ours] a seeded slice of N samples, the same number per task (0: all)
    c.eval.batch_size = 8  # [ours] prompts per generation batch (global)
    c.eval.max_new_tokens = 1024  # [VC-R1] as in training
    c.eval.temperature = 0.0  # [VC-R1/MUSEG] greedy decoding at evaluation
    c.eval.missing = "zero"  # [ours] metric rule for samples without a prediction (tempr1_jax.metrics.Rules)

    # Supervised warm-up before GRPO (demo: lets a random tiny model emit the format). 0 steps: none.
    c.warmup = ml_collections.ConfigDict()
    c.warmup.steps = 0  # [ours] TempR1 has no SFT stage
    c.warmup.batch_size = 8  # [ours] prompts per warm-up step (global)
    c.warmup.learning_rate = 1e-3  # [ours] AdamW
    c.warmup.decay = "constant"  # [ours] or "cosine" (a 5 % ramp, then down to a tenth), "linear"
    # [ours] "truth": ground-truth targets; "loose": imperfect ground truth (boundaries 1 s too wide with
    # probability widen_prob, tal / vhd instances missing with probability drop_prob); "random": random
    # intervals in the same format (teaches the format only)
    c.warmup.targets = "truth"
    c.warmup.widen_prob = 0.6  # [ours] "loose" targets only
    c.warmup.drop_prob = 0.3  # [ours] "loose" targets only
    c.warmup.task_weights = ml_collections.ConfigDict()  # [ours] the warm-up's task mix (empty: natural proportions)
    return c


# [ours] evaluation sets beyond the paper's five temporal benchmarks, as samples files under <root>/samples/:
# TVGBench (Time-R1's grounding benchmark, tg) and the general video benchmarks on which TempR1 reports that RL
# keeps general ability ([paper] VideoMME, MVBench, TempCompass, Perception Test: accuracy, task mcq).
EXTRA_EVAL_SETS = ("tvgbench", "tempcompass_mc", "mvbench", "videomme", "perception_test_mc")


def tempr1_config(size: str, data_root: str) -> ml_collections.ConfigDict:
    """TempR1's run: the recipe above on the five-task mixture of converted corpora under ``data_root``.

    Expects ``<data_root>/samples/<name>.jsonl`` (``python -m data_pipeline.convert``) and ``<data_root>/frames``
    (``python -m data_pipeline.extract_frames``); ``--config.model.path`` gives the Qwen2.5-VL-{3B,7B}-Instruct
    directory. ``data_root`` ending in ``,extra`` (``/data/tempr1,extra``) also evaluates EXTRA_EVAL_SETS in full
    (``eval.extra_samples``). Values not set here are the recipe's defaults in get_config(), each with its source
    there.
    """
    c = get_config()
    data_root, extra = (data_root[: -len(",extra")], True) if data_root.endswith(",extra") else (data_root, False)
    root = data_root.rstrip("/")
    # [paper] the ~60K-sample corpus: TG Charades-STA, DiDeMo and TimeRFT (Time-R1's 2.5K RL set,
    # `--format timerft`; DiDeMo has no converter here: add its samples file when you have it), DTG ActivityNet
    # Captions, VHD QVHighlights, GVQA NExT-GQA, TAL ActivityNet-1.3 and HACS. [paper] All five tasks mixed at
    # random in every batch, in their natural proportions (VC-R1 uses a shuffled ConcatDataset), the prompt and
    # reward chosen per sample: task_weights left empty. [ours] TimeRFT in full (the paper gives no per-source
    # counts; 2500 of ~60K samples).
    c.data.samples = tuple(
        f"{root}/samples/{name}.jsonl"
        for name in ("charades_sta_train", "timerft_train", "activitynet_captions_dtg_train", "qvhighlights_train",
                     "nextgqa_train", "activitynet13_train", "hacs_train")
    )
    c.data.frames = f"{root}/frames"
    c.data.fps = 2.0  # [paper] videos sampled at 2 fps
    c.data.max_frames = 448  # [paper] at most 448 frames, sampled uniformly past that
    c.data.total_pixels = 3584 * 28 * 28  # [paper] at most 3584 visual tokens per video
    c.data.min_pixels = 16 * 28 * 28  # [VC-R1] min_pixels = 16 * 28 * 28
    c.data.max_pixels = 768 * 28 * 28  # [VC-R1] VIDEO_MAX_PIXELS = 768 * 28 * 28
    c.data.prompt_buckets = (1024, 2048, 4096, 8192)  # [VC-R1] --max_prompt_length 8192
    c.data.seed = 42  # [VC-R1] --data_seed 42
    c.train.num_epochs = 1  # [paper] one epoch over the corpus
    c.train.prompts_per_step = 8  # [VC-R1] 8 GPUs x per_device_train_batch_size 1
    c.grpo.num_generations = 8  # [VC-R1] G = 8
    c.grpo.beta = 0.04  # [TRL] beta (VC-R1 passes none), k3 estimator
    c.grpo.kl_estimator = "k3"  # [VC-R1] per_token_kl = exp(ref - logp) - (ref - logp) - 1
    c.grpo.aggregation = "seq_mean_token_mean"  # [VC-R1] token mean per completion, then mean (per sequence)
    c.optimizer.learning_rate = 1e-6  # [TRL] learning_rate default
    c.rollout.temperature = 1.0  # [VC-R1] do_sample, temperature 1
    c.rollout.max_new_tokens = 1024  # [VC-R1] --max_completion_length 1024
    c.model.dtype = "bfloat16"  # [VC-R1] --bf16
    c.model.remat = "full"  # [VC-R1] --gradient_checkpointing true
    c.model.attention_chunk = 1024  # [ours] 8K-token prompts never hold [B, H, L, L] scores at once
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tp=1))  # [ours] ~ZeRO-3: params + Adam sharded
    # Held-out evaluation during training: a fixed random slice of the five benchmarks' evaluation splits.
    c.eval.samples = tuple(
        f"{root}/samples/{name}.jsonl"
        for name in ("charades_sta_test", "activitynet_captions_dtg_val_2", "qvhighlights_val", "nextgqa_test",
                     "activitynet13_val")
    )
    # TVGBench and the general benchmarks, each in full, with ",extra" after the data root (see above).
    c.eval.extra_samples = tuple(f"{root}/samples/{name}.jsonl" for name in EXTRA_EVAL_SETS) if extra else ()
    c.eval.every = 500  # [ours]
    c.eval.max_samples = 256  # [ours] a fixed random slice (seeded by data.seed)
    c.checkpoint.every = 200  # [ours]
    if size not in ("3b", "7b"):  # the architecture itself comes from --config.model.path's config.json
        raise ValueError(f"tempr1_config: size {size!r} is not 3b or 7b")
    c.model.plan_preset = size  # [ours] the planner's shapes when model.path is not readable here (docs/planner.md)
    return c
