"""TRL's side of bench/vs_trl.py: runs one TRL trainer on the prepared workload and prints ONE JSON line.

Runs in a separate virtual environment with TRL installed (never rlhfkit's); imports nothing from
rlhfkit. bench/vs_trl.py writes the models, tokenizer and data to DIR and calls
    python bench/trl_runner.py {grpo,dpo,reward,ppo} DIR
The timed region excludes trainer construction, dataset preparation and the warm-up work, as
rlhfkit's benches do; logging, evaluation and saving are off.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore")
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
BF16 = os.environ.get("BENCH_DTYPE", "float32") == "bfloat16"  # TrainingArguments(bf16=True): CPU autocast
torch.set_num_threads(THREADS)

import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,  # noqa: E402
                          PrinterCallback, TrainerCallback)

transformers.logging.set_verbosity_error()
COMMON = dict(report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no", disable_tqdm=True,
              use_cpu=True, dataloader_num_workers=0, seed=0, lr_scheduler_type="constant", warmup_steps=0,
              weight_decay=0.0, bf16=BF16)


def clocked(trainer):  # noqa: ANN001, ANN201
    """Attach a StepClock and drop the console printer of logs (the trainer still computes its metrics)."""
    trainer.remove_callback(PrinterCallback)
    clock = StepClock()
    trainer.add_callback(clock)
    return clock


class StepClock(TrainerCallback):
    """Wall-clock stamps of train begin/end and of every optimizer step's end; process CPU time of the run."""

    def __init__(self) -> None:
        self.begin = self.end = self.cpu_begin = self.cpu_end = 0.0
        self.steps: list[float] = []

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001, D102
        self.begin, self.cpu_begin = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, D102
        self.steps.append(time.perf_counter())

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001, D102
        self.end, self.cpu_end = time.perf_counter(), time.process_time()


def load(path: str) -> dict:
    with open(path) as handle:
        return json.load(handle)


def grpo(root: str, data: dict, out: str) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    w = data["grpo"]
    config = GRPOConfig(
        output_dir=out, **COMMON, learning_rate=1e-5, max_steps=w["steps"] + 1,
        per_device_train_batch_size=w["prompts"] * w["group"], gradient_accumulation_steps=1,
        num_generations=w["group"], generation_batch_size=w["prompts"] * w["group"],
        max_completion_length=w["new_tokens"], generation_kwargs={"min_new_tokens": w["new_tokens"]},
        temperature=1.0, top_p=1.0, top_k=0, beta=w["beta"], loss_type="grpo", scale_rewards="group",
        num_iterations=1, epsilon=0.2, disable_dropout=True, log_completions=False, shuffle_dataset=True)
    trainer = GRPOTrainer(model=os.path.join(root, "policy"), reward_funcs=os.path.join(root, "reward"), args=config,
                          train_dataset=Dataset.from_dict({"prompt": data["prompts"]}),
                          processing_class=AutoTokenizer.from_pretrained(os.path.join(root, "policy")))
    clock = clocked(trainer)
    trainer.train()
    seconds = clock.steps[-1] - clock.steps[0]  # the first step is the warm-up
    completions = w["prompts"] * w["group"] * w["steps"]
    return {"seconds": seconds, "completions_per_s": completions / seconds, "steps": w["steps"]}


def dpo(root: str, data: dict, out: str) -> dict:
    from trl import DPOConfig, DPOTrainer

    w = data["dpo"]
    spent = {"reference": 0.0, "reference_cpu": 0.0}
    original = DPOTrainer._precompute_ref_logps

    def timed_precompute(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        started, cpu = time.perf_counter(), time.process_time()
        result = original(self, *args, **kwargs)
        spent["reference"] += time.perf_counter() - started
        spent["reference_cpu"] += time.process_time() - cpu
        return result

    DPOTrainer._precompute_ref_logps = timed_precompute
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(root, "policy"))
    rows = {"prompt": [p["prompt"] for p in data["pairs"]], "chosen": [p["chosen"] for p in data["pairs"]],
            "rejected": [p["rejected"] for p in data["pairs"]]}

    def run(count: int) -> tuple[float, float, int, float]:
        spent["reference"] = spent["reference_cpu"] = 0.0
        config = DPOConfig(output_dir=out, **COMMON, learning_rate=1e-5, num_train_epochs=1,
                           per_device_train_batch_size=w["batch_pairs"], gradient_accumulation_steps=1,
                           beta=w["beta"], max_length=None, precompute_ref_log_probs=True,
                           precompute_ref_batch_size=w["batch_pairs"], disable_dropout=True)
        model = AutoModelForCausalLM.from_pretrained(os.path.join(root, "policy"))
        trainer = DPOTrainer(model=model, args=config, processing_class=tokenizer,
                             train_dataset=Dataset.from_dict({k: v[:count] for k, v in rows.items()}))
        clock = clocked(trainer)
        trainer.train()
        cpu = spent["reference_cpu"] + clock.cpu_end - clock.cpu_begin
        return spent["reference"], clock.end - clock.begin, trainer.state.global_step, cpu

    run(2 * w["batch_pairs"])  # warm-up trainer on 2 batches (first-call overheads off the clock)
    reference, train, steps, cpu = run(len(data["pairs"]))
    seconds = reference + train
    return {"seconds": seconds, "cpu_seconds": cpu, "reference_seconds": reference, "train_seconds": train,
            "optimizer_steps": steps, "pairs_per_s": len(data["pairs"]) / seconds}


def reward(root: str, data: dict, out: str) -> dict:
    from trl import RewardConfig, RewardTrainer

    w = data["reward"]
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(root, "policy"))
    rows = {"chosen_ids": [r["chosen_ids"] for r in data["rm_pairs"]],
            "rejected_ids": [r["rejected_ids"] for r in data["rm_pairs"]]}

    def run(count: int) -> tuple[float, int, float]:
        config = RewardConfig(output_dir=out, **COMMON, learning_rate=1e-4, num_train_epochs=1,
                              per_device_train_batch_size=w["batch_pairs"], gradient_accumulation_steps=1,
                              max_length=None, disable_dropout=True)
        model = AutoModelForSequenceClassification.from_pretrained(os.path.join(root, "reward"), num_labels=1)
        trainer = RewardTrainer(model=model, args=config, processing_class=tokenizer,
                                train_dataset=Dataset.from_dict({k: v[:count] for k, v in rows.items()}))
        clock = clocked(trainer)
        trainer.train()
        return clock.end - clock.begin, trainer.state.global_step, clock.cpu_end - clock.cpu_begin

    run(2 * w["batch_pairs"])
    seconds, steps, cpu = run(len(data["rm_pairs"]))
    return {"seconds": seconds, "cpu_seconds": cpu, "optimizer_steps": steps,
            "pairs_per_s": len(data["rm_pairs"]) / seconds}


def ppo(root: str, data: dict, out: str) -> dict:
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    w = data["ppo"]
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(root, "policy"))
    batch = w["batch"]
    config = PPOConfig(output_dir=out, **COMMON, learning_rate=1e-5, per_device_train_batch_size=batch,
                       gradient_accumulation_steps=1, num_mini_batches=w["minibatches"], num_ppo_epochs=1,
                       total_episodes=batch * (w["steps"] + 1), response_length=w["new_tokens"],
                       local_rollout_forward_batch_size=batch, temperature=1.0, kl_coef=w["kl_coef"],
                       kl_estimator="k1", stop_token=None, missing_eos_penalty=None, num_sample_generations=0,
                       whiten_rewards=False)
    policy = AutoModelForCausalLM.from_pretrained(os.path.join(root, "policy"))
    ref = AutoModelForCausalLM.from_pretrained(os.path.join(root, "policy"))
    value = AutoModelForSequenceClassification.from_pretrained(os.path.join(root, "critic"), num_labels=1)
    reward_model = AutoModelForSequenceClassification.from_pretrained(os.path.join(root, "reward"), num_labels=1)
    dataset = Dataset.from_dict({"input_ids": data["prompt_ids"]})
    trainer = PPOTrainer(args=config, processing_class=tokenizer, model=policy, ref_model=ref,
                         reward_model=reward_model, value_model=value, train_dataset=dataset)
    clock = clocked(trainer)
    trainer.train()
    stamps = clock.steps
    seconds = stamps[-1] - stamps[0]
    return {"seconds": seconds, "episodes_per_s": batch * (len(stamps) - 1) / seconds, "steps": len(stamps) - 1}


def main() -> None:
    workload, root = sys.argv[1], sys.argv[2]
    data = load(os.path.join(root, "data.json"))
    before = open("/proc/loadavg").read().split()[:3]
    with tempfile.TemporaryDirectory() as out:
        os.environ["HF_DATASETS_CACHE"] = os.path.join(out, "datasets")
        result = {"grpo": grpo, "dpo": dpo, "reward": reward, "ppo": ppo}[workload](root, data, out)
    result.update({"side": "trl", "workload": workload, "dtype": "bfloat16" if BF16 else "float32",
                   "trl": trl.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
                   "loadavg_before": [float(x) for x in before],
                   "loadavg_after": [float(x) for x in open("/proc/loadavg").read().split()[:3]]})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
