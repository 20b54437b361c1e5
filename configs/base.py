"""The trainer's config schema with TempR1's GRPO recipe as defaults.

TempR1 says its GRPO hyperparameters "follow VideoChat-R1", which runs TRL 0.15.1's GRPOTrainer with its
defaults under the HF Trainer's defaults (../shared/notes/paper.md section 3.2). Each value below names its
source: [VC-R1] = VideoChat-R1's training script, [TRL] = TRL 0.15.1 GRPOConfig default, [HF] = HF
TrainingArguments default (which TRL inherits), [SPEC] = ../shared/SPEC.md, [ours] = this project's choice.

Experiment configs (configs/demo.py, configs/tempr1_7b.py...) build on this one and add the model, data and
rollout blocks. Override anything from the command line: ``--config.grpo.beta=0``.
"""

import ml_collections
from ml_collections import config_dict


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

    # Rewards: the keyword arguments of tempr1_jax.rewards.compute_rewards.
    c.reward = ml_collections.ConfigDict()
    c.reward.think = "optional"  # [SPEC] section 2: "optional" (default), "required" or "forbidden"
    c.reward.weights = ml_collections.ConfigDict(dict(format=1.0, localization=1.0, answer=1.0))  # [SPEC] 3
    c.reward.sigma = 1.0  # [SPEC] section 3: TAL count reward scale
    return c
