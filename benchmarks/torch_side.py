"""The PyTorch half of `bench_vs_pytorch.py` (run by a Python that has torch; kd_jax never imports
torch). Rebuilds kd_jax's networks in PyTorch, loads kd_jax's initial weights from an .npz, checks
parameter counts and outputs against kd_jax's, then times the same train step (eager and
torch.compile). Prints one JSON line.

  python benchmarks/torch_side.py --npz /tmp/x.npz --workload classifier_kd --steps 30 --threads 2
"""
import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def same_pad(x, k, s):
  """TensorFlow/XLA 'SAME' padding (the extra pixel at the end), as kd_jax's convs use."""
  h = x.shape[-1]
  out = -(-h // s)
  total = max((out - 1) * s + k - h, 0)
  lo = total // 2
  return F.pad(x, (lo, total - lo, lo, total - lo))


class ConvBN(nn.Module):
  def __init__(self, cin, cout, k, s, act=True):
    super().__init__()
    self.k, self.s, self.act = k, s, act
    self.conv = nn.Conv2d(cin, cout, k, s, 0, bias=False)
    self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.1)

  def forward(self, x):
    x = self.bn(self.conv(same_pad(x, self.k, self.s)))
    return F.relu(x) if self.act else x


class Block(nn.Module):
  def __init__(self, cin, cout, s):
    super().__init__()
    self.conv1, self.conv2 = ConvBN(cin, cout, 3, s), ConvBN(cout, cout, 3, 1, act=False)
    self.shortcut = ConvBN(cin, cout, 1, s, act=False) if (s != 1 or cin != cout) else None

  def forward(self, x):
    y = self.conv2(self.conv1(x))
    return F.relu((self.shortcut(x) if self.shortcut is not None else x) + y)


class ResNet20(nn.Module):
  def __init__(self, width, classes=10, n=3):
    super().__init__()
    self.stem = ConvBN(1, width, 3, 1)
    blocks, cin = [], width
    for i, mult in enumerate((1, 2, 4)):
      for j in range(n):
        blocks.append((f'stage{i + 1}/block{j}', Block(cin, width * mult, 1 if i == 0 or j else 2)))
        cin = width * mult
    self.names = [n for n, _ in blocks]
    self.blocks = nn.ModuleList([b for _, b in blocks])
    self.head = nn.Linear(cin, classes)

  def forward(self, x):
    x = self.stem(x)
    for b in self.blocks:
      x = b(x)
    return self.head(x.mean((2, 3)))


class SmallCNN(nn.Module):
  def __init__(self, width, classes=10):
    super().__init__()
    self.stages = nn.ModuleList([ConvBN(1 if i == 0 else width * (1, 2, 4)[i - 1],
                                        width * m, 3, 1 if i == 0 else 2)
                                 for i, m in enumerate((1, 2, 4))])
    self.head = nn.Linear(width * 4, classes)

  def forward(self, x):
    for s in self.stages:
      x = s(x)
    return self.head(x.mean((2, 3)))


class DCGANGenerator(nn.Module):
  """kd_jax's dcgan_generator at 28 px: dense → 7×7 map, two (nearest ×2, 3×3 conv, BN, ReLU)
  blocks, 3×3 to_rgb, tanh."""

  def __init__(self, width, latent_dim=64, channels=1):
    super().__init__()
    self.start, self.c0 = 7, width * 4
    self.dense = nn.Linear(latent_dim, 7 * 7 * self.c0, bias=False)
    self.bn0 = nn.BatchNorm2d(self.c0, eps=1e-5, momentum=0.1)
    self.convs = nn.ModuleList([nn.Conv2d(width * 4, width * 2, 3, 1, 1, bias=False),
                                nn.Conv2d(width * 2, width, 3, 1, 1, bias=False)])
    self.bns = nn.ModuleList([nn.BatchNorm2d(width * 2, eps=1e-5, momentum=0.1),
                              nn.BatchNorm2d(width, eps=1e-5, momentum=0.1)])
    self.to_rgb = nn.Conv2d(width, channels, 3, 1, 1)

  def forward(self, z):
    # kd_jax reshapes the dense output as NHWC.
    x = self.dense(z).view(z.shape[0], self.start, self.start, self.c0).permute(0, 3, 1, 2)
    x = F.relu(self.bn0(x))
    for conv, bn in zip(self.convs, self.bns):
      x = F.relu(bn(conv(F.interpolate(x, scale_factor=2, mode='nearest'))))
    return torch.tanh(self.to_rgb(x))


def load_generator(m, a, prefix):
  t = lambda k: torch.from_numpy(np.ascontiguousarray(a[f'{prefix}/{k}']))
  m.dense.weight.data = t('project/dense/kernel').T.contiguous()
  m.bn0.weight.data, m.bn0.bias.data = t('project/bn/scale'), t('project/bn/bias')
  m.bn0.running_mean.data, m.bn0.running_var.data = t('stats/project/bn/mean'), t('stats/project/bn/var')
  for i, (conv, bn) in enumerate(zip(m.convs, m.bns)):
    conv.weight.data = t(f'block{i}/conv/kernel').permute(3, 2, 0, 1).contiguous()
    bn.weight.data, bn.bias.data = t(f'block{i}/bn/scale'), t(f'block{i}/bn/bias')
    bn.running_mean.data, bn.running_var.data = t(f'stats/block{i}/bn/mean'), t(f'stats/block{i}/bn/var')
  m.to_rgb.weight.data = t('to_rgb/kernel').permute(3, 2, 0, 1).contiguous()
  m.to_rgb.bias.data = t('to_rgb/bias')


def generator_main(args, a):
  """Data-free L1 generator distillation: both G on the same fresh z, teacher frozen."""
  teacher, student = DCGANGenerator(int(a['width_teacher'])), DCGANGenerator(int(a['width_student']))
  load_generator(teacher, a, 'teacher')
  load_generator(student, a, 'student')
  z = torch.from_numpy(a['z'])
  check = {}
  with torch.no_grad():
    teacher.eval()
    student.eval()
    for who, m in (('student', student), ('teacher', teacher)):
      img = m(z).permute(0, 2, 3, 1)
      check[f'{who}_max_abs_diff'] = float((img - torch.from_numpy(a[f'{who}_logits'])).abs().max())
      check[f'{who}_params'] = sum(q.numel() for q in m.parameters())
  for q in teacher.parameters():
    q.requires_grad_(False)
  student.train()
  opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
  batch, zdim = int(a['batch']), z.shape[1]

  def step():
    opt.zero_grad(set_to_none=True)
    zz = torch.randn(batch, zdim)
    with torch.no_grad():
      t = teacher(zz)
    loss = (student(zz) - t).abs().mean()
    loss.backward()
    opt.step()
    return loss
  return compiled(step, args), check


class DCGANDiscriminator(nn.Module):
  """kd_jax's dcgan_discriminator at 28 px: two 4×4 stride-2 SAME convs + LeakyReLU(0.2), the NHWC
  flatten, a dense logit."""

  def __init__(self, width, channels=1):
    super().__init__()
    self.convs = nn.ModuleList([nn.Conv2d(channels, width, 4, 2, 0),
                                nn.Conv2d(width, width * 2, 4, 2, 0)])
    self.head = nn.Linear(7 * 7 * width * 2, 1)

  def forward(self, x):
    for conv in self.convs:
      x = F.leaky_relu(conv(same_pad(x, 4, 2)), 0.2)
    return self.head(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))[:, 0]


def load_discriminator(m, a, prefix):
  t = lambda k: torch.from_numpy(np.ascontiguousarray(a[f'{prefix}/{k}']))
  for i, conv in enumerate(m.convs):
    conv.weight.data = t(f'block{i}/conv/kernel').permute(3, 2, 0, 1).contiguous()
    conv.bias.data = t(f'block{i}/conv/bias')
  m.head.weight.data, m.head.bias.data = t('head/kernel').T.contiguous(), t('head/bias')


def gan_main(args, a):
  """One D step (logistic loss + γ/2·R1 on real) on real vs G(z), one G step, the EMA of G."""
  g, d = DCGANGenerator(int(a['width_teacher'])), DCGANDiscriminator(int(a['width_teacher']))
  load_generator(g, a, 'generator')
  load_discriminator(d, a, 'discriminator')
  z, real = torch.from_numpy(a['z']), torch.from_numpy(a['images'].transpose(0, 3, 1, 2).copy())
  check = {}
  with torch.no_grad():
    g.eval()
    img = g(z).permute(0, 2, 3, 1)
    check['student_max_abs_diff'] = float((img - torch.from_numpy(a['student_logits'])).abs().max())
    check['teacher_max_abs_diff'] = float((d(real[:8]) - torch.from_numpy(a['teacher_logits'])).abs().max())
  check['student_params'] = sum(q.numel() for q in g.parameters())
  check['teacher_params'] = sum(q.numel() for q in d.parameters())
  g.train()
  opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.0, 0.99))
  opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.0, 0.99))
  ema = [q.detach().clone() for q in g.parameters()]
  run_g = g
  if args.compile:
    # torch.compile's aot_autograd has no double backward, which R1 needs through D ("does not
    # currently support double backward"): only G is compiled, D and the step stay eager.
    run_g = torch.compile(g)
    check['compiled'] = 'G only (no double backward through D)'
  batch, zdim, gamma = real.shape[0], z.shape[1], 1.0

  def step():
    fake = run_g(torch.randn(batch, zdim)).detach()
    x = real.detach().requires_grad_(True)
    d_real, d_fake = d(x), d(fake)
    adv = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
    grad, = torch.autograd.grad(d_real.sum(), x, create_graph=True)
    r1 = grad.pow(2).flatten(1).sum(1).mean()
    opt_d.zero_grad(set_to_none=True)
    (adv + 0.5 * gamma * r1).backward()
    opt_d.step()
    opt_g.zero_grad(set_to_none=True)
    g_loss = F.softplus(-d(run_g(torch.randn(batch, zdim)))).mean()
    g_loss.backward()
    opt_g.step()
    with torch.no_grad():
      for e, q in zip(ema, g.parameters()):
        e.mul_(0.999).add_(q, alpha=0.001)
    return g_loss
  return step, check


def _groups(c):
  return max(1, min(32, c // 4))  # kd_jax.models.unet._groups


class UNetResBlock(nn.Module):
  """kd_jax's unet.ResBlock: GN → SiLU → conv → +emb shift → GN → SiLU → conv, skip, /√2."""

  def __init__(self, cin, cout, emb_dim):
    super().__init__()
    # Flax's GroupNorm: ε = 1e-6 (PyTorch's default is 1e-5).
    self.norm0, self.norm1 = nn.GroupNorm(_groups(cin), cin, 1e-6), nn.GroupNorm(_groups(cout), cout, 1e-6)
    self.conv0, self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1), nn.Conv2d(cout, cout, 3, 1, 1)
    self.emb = nn.Linear(emb_dim, cout)
    self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

  def forward(self, x, emb):
    h = self.conv0(F.silu(self.norm0(x))) + self.emb(emb)[:, :, None, None]
    h = self.conv1(F.silu(self.norm1(h)))
    return (h + (self.skip(x) if self.skip is not None else x)) * (1.0 / np.sqrt(2.0))


class EDMUNet(nn.Module):
  """kd_jax's edm_unet (num_blocks 1, no attention, unconditional): EDM preconditioning around a
  stem, per level an encoder block (+ 2×2 average pool), two middle blocks, per level two decoder
  blocks on skip concatenations (+ nearest ×2 and a 3×3 conv), GN → SiLU → 3×3 out."""

  def __init__(self, channels, channel_mult, sigma_data=0.5):
    super().__init__()
    self.c, self.mult, self.sigma_data = channels, tuple(channel_mult), sigma_data
    e = 4 * channels
    self.emb0, self.emb1 = nn.Linear(channels, e), nn.Linear(e, e)
    self.stem = nn.Conv2d(1, channels * self.mult[0], 3, 1, 1)
    self.blocks, widths, cin = nn.ModuleDict(), [channels * self.mult[0]], channels * self.mult[0]
    for lvl, m in enumerate(self.mult):
      self.blocks[f'enc{lvl}_0'] = UNetResBlock(cin, channels * m, e)
      cin = channels * m
      widths += [cin] + ([cin] if lvl < len(self.mult) - 1 else [])
    self.blocks['mid0'] = UNetResBlock(cin, cin, e)
    self.blocks['mid1'] = UNetResBlock(cin, cin, e)
    self.ups = nn.ModuleDict()
    for lvl in reversed(range(len(self.mult))):
      for b in range(2):
        self.blocks[f'dec{lvl}_{b}'] = UNetResBlock(cin + widths.pop(), channels * self.mult[lvl], e)
        cin = channels * self.mult[lvl]
      if lvl > 0:
        self.ups[f'up{lvl}'] = nn.Conv2d(cin, channels * self.mult[lvl - 1], 3, 1, 1)
        cin = channels * self.mult[lvl - 1]
    self.out_norm = nn.GroupNorm(_groups(cin), cin, 1e-6)
    self.out = nn.Conv2d(cin, 1, 3, 1, 1)

  def forward(self, x, sigma):
    sd = self.sigma_data
    c_in = (sigma ** 2 + sd ** 2).rsqrt()
    c_skip, c_out, c_noise = sd ** 2 * c_in ** 2, sigma * sd * c_in, sigma.log() / 4
    half = self.c // 2
    freqs = torch.exp(-np.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    a = c_noise[:, None] * freqs[None]
    emb = F.silu(self.emb1(F.silu(self.emb0(torch.cat([a.cos(), a.sin()], -1)))))
    bc = lambda c: c[:, None, None, None]
    h = self.stem(bc(c_in) * x)
    skips = [h]
    for lvl in range(len(self.mult)):
      h = self.blocks[f'enc{lvl}_0'](h, emb)
      skips.append(h)
      if lvl < len(self.mult) - 1:
        h = F.avg_pool2d(h, 2)
        skips.append(h)
    h = self.blocks['mid1'](self.blocks['mid0'](h, emb), emb)
    for lvl in reversed(range(len(self.mult))):
      for b in range(2):
        h = self.blocks[f'dec{lvl}_{b}'](torch.cat([h, skips.pop()], 1), emb)
      if lvl > 0:
        h = self.ups[f'up{lvl}'](F.interpolate(h, scale_factor=2, mode='nearest'))
    f = self.out(F.silu(self.out_norm(h)))
    return bc(c_skip) * x + bc(c_out) * f


def load_unet(m, a, prefix):
  """kd_jax's flax names (`<prefix>/<module>/<layer>/kernel`) → the U-Net's tensors."""
  t = lambda k: torch.from_numpy(np.ascontiguousarray(a[f'{prefix}/{k}']))
  conv = lambda c, k: (setattr(c.weight, 'data', t(f'{k}/kernel').permute(3, 2, 0, 1).contiguous()),
                       setattr(c.bias, 'data', t(f'{k}/bias')))
  dense = lambda d, k: (setattr(d.weight, 'data', t(f'{k}/kernel').T.contiguous()),
                        setattr(d.bias, 'data', t(f'{k}/bias')))
  norm = lambda g, k: (setattr(g.weight, 'data', t(f'{k}/scale')), setattr(g.bias, 'data', t(f'{k}/bias')))
  dense(m.emb0, 'emb0')
  dense(m.emb1, 'emb1')
  conv(m.stem, 'stem')
  for name, blk in m.blocks.items():
    norm(blk.norm0, f'{name}/norm0')
    norm(blk.norm1, f'{name}/norm1')
    conv(blk.conv0, f'{name}/conv0')
    conv(blk.conv1, f'{name}/conv1')
    dense(blk.emb, f'{name}/emb')
    if blk.skip is not None:
      conv(blk.skip, f'{name}/skip')
  for name, up in m.ups.items():
    conv(up, f'{name}/conv')
  norm(m.out_norm, 'out_norm')
  conv(m.out, 'out')


def diffusion_main(args, a):
  """EDM's denoising step (edm_teacher: target x) or output KD from a frozen U-Net (edm_compress:
  target D_t(x_σ; σ)): ln σ ~ N(−1.2, 1.2²), λ(σ)-weighted L2, Adam 1e-3, the student's EMA."""
  import json as _json  # pylint: disable=import-outside-toplevel
  arch = lambda who: _json.loads(str(a[f'{who}_arch']))
  student = EDMUNet(**arch('student'))
  load_unet(student, a, 'student')
  teacher = None
  if arch('teacher'):
    teacher = EDMUNet(**arch('teacher'))
    load_unet(teacher, a, 'teacher')
    for q in teacher.parameters():
      q.requires_grad_(False)
  x, sigma = torch.from_numpy(a['images'].transpose(0, 3, 1, 2).copy()), torch.from_numpy(a['sigma'])
  check = {}
  with torch.no_grad():
    for who, m in (('student', student), ('teacher', teacher)):
      if m is not None:
        out = m(x, sigma).permute(0, 2, 3, 1)
        check[f'{who}_max_abs_diff'] = float((out - torch.from_numpy(a[f'{who}_logits'])).abs().max())
        check[f'{who}_params'] = sum(q.numel() for q in m.parameters())
  opt = torch.optim.Adam(student.parameters(), lr=1e-3)
  ema = [q.detach().clone() for q in student.parameters()]
  images = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (int(a['batch']), 1, 28, 28))
                            .astype(np.float32))
  sd = 0.5

  def step():
    s = torch.exp(-1.2 + 1.2 * torch.randn(images.shape[0]))
    x_s = images + s[:, None, None, None] * torch.randn_like(images)
    if teacher is not None:
      with torch.no_grad():
        target = teacher(x_s, s)
    else:
      target = images
    weight = (s ** 2 + sd ** 2) / (s * sd) ** 2
    loss = (weight * (student(x_s, s) - target).pow(2).mean((1, 2, 3))).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
      torch._foreach_lerp_(ema, list(student.parameters()), 0.001)  # ema ← 0.999·ema + 0.001·θ
    return loss
  return compiled(step, args), check


def load(module, arrays, prefix):
  """kd_jax names (`<prefix>/<flax path>`) → this module's tensors."""
  def convbn(m, path):
    m.conv.weight.data = torch.from_numpy(arrays[f'{prefix}/{path}/conv/kernel'].transpose(3, 2, 0, 1).copy())
    m.bn.weight.data = torch.from_numpy(arrays[f'{prefix}/{path}/bn/scale'])
    m.bn.bias.data = torch.from_numpy(arrays[f'{prefix}/{path}/bn/bias'])
    m.bn.running_mean.data = torch.from_numpy(arrays[f'{prefix}/stats/{path}/bn/mean'])
    m.bn.running_var.data = torch.from_numpy(arrays[f'{prefix}/stats/{path}/bn/var'])
  if isinstance(module, ResNet20):
    convbn(module.stem, 'stem')
    for name, b in zip(module.names, module.blocks):
      convbn(b.conv1, f'{name}/conv1')
      convbn(b.conv2, f'{name}/conv2')
      if b.shortcut is not None:
        convbn(b.shortcut, f'{name}/shortcut')
  else:
    for i, s in enumerate(module.stages):
      convbn(s, f'stage{i + 1}/conv0')
  module.head.weight.data = torch.from_numpy(arrays[f'{prefix}/head/kernel'].T.copy())
  module.head.bias.data = torch.from_numpy(arrays[f'{prefix}/head/bias'])


def compiled(step, args):
  """The whole step under torch.compile with --compile (each workload decides what it compiles)."""
  return torch.compile(step) if args.compile else step


def steps_per_sec(step, args):
  """3 warm-up steps (torch.compile compiles here), then `args.steps` timed ones."""
  for _ in range(3):
    step()
  t0 = time.perf_counter()
  for _ in range(args.steps):
    step()
  return args.steps / (time.perf_counter() - t0)


def _rss_mb():
  import resource  # pylint: disable=import-outside-toplevel
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


IMPORT_RSS_MB = _rss_mb()  # torch and numpy imported, nothing built yet


def _report(rate, check):
  print(json.dumps({'steps_per_sec': rate, 'peak_rss_mb': _rss_mb(),
                    'import_rss_mb': IMPORT_RSS_MB, **check}))


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--npz', required=True)
  p.add_argument('--workload', required=True)
  p.add_argument('--steps', type=int, default=30)
  p.add_argument('--threads', type=int, default=2)
  p.add_argument('--compile', action='store_true')
  args = p.parse_args()
  torch.set_num_threads(args.threads)
  a = dict(np.load(args.npz))
  mains = {'generator_l1': generator_main, 'gan_teacher': gan_main,
           'edm_teacher': diffusion_main, 'edm_compress': diffusion_main}
  if args.workload in mains:
    step, check = mains[args.workload](args, a)
    _report(steps_per_sec(step, args), check)
    return
  width_s, width_t = int(a['width_student']), int(a['width_teacher'])
  student = SmallCNN(width_s)
  load(student, a, 'student')
  teacher = None
  if args.workload == 'classifier_kd':
    teacher = ResNet20(width_t)
    load(teacher, a, 'teacher')
    teacher.eval()
    for q in teacher.parameters():
      q.requires_grad_(False)
  x = torch.from_numpy(a['images'].transpose(0, 3, 1, 2).copy())
  y = torch.from_numpy(a['labels'].astype(np.int64))
  check = {}
  with torch.no_grad():
    student.eval()
    check['student_max_abs_diff'] = float((student(x) - torch.from_numpy(a['student_logits'])).abs().max())
    if teacher is not None:
      check['teacher_max_abs_diff'] = float((teacher(x) - torch.from_numpy(a['teacher_logits'])).abs().max())
  check['student_params'] = sum(q.numel() for q in student.parameters())
  if teacher is not None:
    check['teacher_params'] = sum(q.numel() for q in teacher.parameters())
  student.train()
  opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
  t_temp = 2.0

  def step():
    opt.zero_grad(set_to_none=True)
    s = student(x)
    loss = F.cross_entropy(s, y)
    if teacher is not None:
      with torch.no_grad():
        t = teacher(x)
      kd = F.kl_div(F.log_softmax(s / t_temp, -1), F.log_softmax(t / t_temp, -1), log_target=True,
                    reduction='batchmean') * t_temp ** 2
      loss = 0.5 * loss + 0.5 * kd
    loss.backward()
    opt.step()
    return loss

  _report(steps_per_sec(compiled(step, args), args), check)


if __name__ == '__main__':
  main()
