"""Interop check 4: the learning rate at every step, topksae's cpu::lr_at against sae_lens 6.13.1's
get_lr_scheduler (torch SequentialLR of LinearLR warm-up, the main scheduler and LinearLR decay),
stepped exactly as SAETrainer does (optimizer step, then scheduler step). Also the configuration
sae_lens refuses (decay to an lr_end of 0 with a non-constant scheduler) must be refused here too,
and the one it accepts (the constant scheduler ignores lr_end) accepted."""
import json
import os
import subprocess

import torch
from sae_lens.training.optim import get_lr_scheduler

from common import TOOL, Mismatch, expect_close, main, run

CONFIGS = [
    dict(lr_scheduler_name="constant", lr=3e-4, lr_warm_up_steps=0, lr_decay_steps=0, lr_end=None, steps=20),
    dict(lr_scheduler_name="constant", lr=3e-4, lr_warm_up_steps=5, lr_decay_steps=7, lr_end=None, steps=40),
    dict(lr_scheduler_name="constant", lr=1e-3, lr_warm_up_steps=1, lr_decay_steps=1, lr_end=None, steps=10),
    dict(lr_scheduler_name="cosineannealing", lr=1e-3, lr_warm_up_steps=0, lr_decay_steps=0, lr_end=None, steps=37),
    dict(lr_scheduler_name="CosineAnnealing", lr=2e-4, lr_warm_up_steps=6, lr_decay_steps=9, lr_end=3e-5, steps=50),
    dict(lr_scheduler_name="cosineannealingwarmrestarts", lr=5e-4, lr_warm_up_steps=3, lr_decay_steps=4,
         lr_end=1e-5, n_restart_cycles=3, steps=61),
    dict(lr_scheduler_name="cosineannealingwarmrestarts", lr=5e-4, lr_warm_up_steps=0, lr_decay_steps=0,
         lr_end=None, n_restart_cycles=4, steps=45),
    dict(lr_scheduler_name="constant", lr=1e-3, lr_warm_up_steps=4, lr_decay_steps=6, lr_end=0.0, steps=30),
]


def sae_lens_lrs(c):
    lr_end = c["lr_end"] if c["lr_end"] is not None else c["lr"] / 10  # sae_lens config post-init default
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=c["lr"])
    sched = get_lr_scheduler(c["lr_scheduler_name"], optimizer=opt, training_steps=c["steps"], lr=c["lr"],
                             warm_up_steps=c["lr_warm_up_steps"], decay_steps=c["lr_decay_steps"], lr_end=lr_end,
                             num_cycles=c.get("n_restart_cycles", 1))
    out = []
    for _ in range(c["steps"]):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def our_config(d, c):
    cfg = {"d_in": 8, "d_sae": 16, "k": 2, "batch_size": 4, "training_tokens": 4 * c["steps"],
           **{k: v for k, v in c.items() if k != "steps"}}
    path = os.path.join(d, "cfg.json")
    json.dump(cfg, open(path, "w"))
    return path


def check_schedules(d):
    for c in CONFIGS:
        ours = json.loads(run([TOOL, "lr", our_config(d, c), str(c["steps"])]))
        label = (f"{c['lr_scheduler_name']} warm-up {c['lr_warm_up_steps']} decay {c['lr_decay_steps']} "
                 f"lr_end {c['lr_end']} cycles {c.get('n_restart_cycles', 1)}, {c['steps']} steps")
        expect_close(label, ours, sae_lens_lrs(c), tol=1e-9)


def check_refusal(d):
    c = dict(lr_scheduler_name="cosineannealing", lr=1e-3, lr_warm_up_steps=2, lr_decay_steps=5, lr_end=0.0, steps=20)
    try:
        sae_lens_lrs(c)
        raise Mismatch("sae_lens accepted decay to lr_end 0; this check's premise is wrong")
    except ValueError as e:
        theirs = str(e)
    p = subprocess.run([TOOL, "lr", our_config(d, c), "20"], capture_output=True, text=True)
    if p.returncode == 0 or theirs not in p.stderr:
        raise Mismatch(f"topksae should refuse with sae_lens's message {theirs!r}; exit {p.returncode}, {p.stderr!r}")
    print(f"  ok   decay to lr_end 0 refused by both: {theirs!r}")


if __name__ == "__main__":
    main([("4: LR schedules per step", check_schedules), ("4: refused configuration", check_refusal)])
