// The BullMQ side of stevedore's benchmark: the same workloads as `examples/bench` through
// BullMQ's documented API (Queue.add, Queue.addBulk, Worker), in its default options, on
// the same Redis. The benchmark program runs it once per workload:
//
//   node bench.mjs enqueue --url redis://127.0.0.1:6379 --prefix p --single N --bulk N --chunk K
//   node bench.mjs drain   --url ... --prefix p --jobs N --concurrency C --procs P
//   node bench.mjs latency --url ... --prefix p --rate R --seconds S --warmup-ms W --concurrency C
//   node bench.mjs memory  --url ... --prefix p --jobs N --chunk K
//
// and reads the one JSON object printed as the last line of stdout. Work per job is read
// from INFO the same way the Rust side reads it: commandstats (Lua-internal calls
// included), total_reads_processed (round trips) and used_cpu_* (Redis CPU). Workers run
// as child processes (`bench.mjs worker`, over IPC) so their memory can be read and two can
// share a queue. Install with `npm ci` in this directory.

import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const self = fileURLToPath(import.meta.url);

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--')) {
      out[argv[i].slice(2)] = argv[i + 1];
      i++;
    } else {
      out._.push(argv[i]);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const url = new URL(args.url ?? 'redis://127.0.0.1:6379');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
  ...(url.username ? { username: decodeURIComponent(url.username) } : {}),
  // Required by BullMQ workers (blocking commands must not be retried by ioredis).
  maxRetriesPerRequest: null,
};
const prefix = args.prefix ?? 'bench-bullmq';

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- INFO, as examples/bench/info.rs reads it ----

async function snapshot(redis) {
  const text = await redis.info('all');
  const s = { calls: {}, usec: {}, reads: 0, cpu: 0, usedMemory: 0 };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const at = line.indexOf(':');
    if (at < 0) continue;
    const key = line.slice(0, at);
    const value = line.slice(at + 1);
    if (key === 'total_reads_processed') s.reads = Number(value);
    else if (key === 'used_cpu_user' || key === 'used_cpu_sys') s.cpu += Number(value);
    else if (key === 'used_memory') s.usedMemory = Number(value);
    else if (key.startsWith('cmdstat_')) {
      const calls = /calls=(\d+)/.exec(value);
      const usec = /usec=(\d+)/.exec(value);
      s.calls[key.slice(8).replace('|', ' ')] = calls ? Number(calls[1]) : 0;
      s.usec[key.slice(8).replace('|', ' ')] = usec ? Number(usec[1]) : 0;
    }
  }
  return s;
}

function perJob(before, after, own, jobs) {
  jobs = Math.max(jobs, 1);
  const byCommand = {};
  const usecByCommand = {};
  let total = 0;
  for (const [name, calls] of Object.entries(after.calls)) {
    if (name === 'info') continue;
    const delta = Math.max(0, calls - (before.calls[name] ?? 0) - (own.calls[name] ?? 0));
    total += delta;
    if (delta / jobs >= 0.005) {
      byCommand[name] = delta / jobs;
      usecByCommand[name] = Math.max(0, (after.usec[name] ?? 0) - (before.usec[name] ?? 0)) / jobs;
    }
  }
  const reads = Math.max(0, after.reads - before.reads - own.reads - 1);
  return {
    commands: total / jobs,
    round_trips: reads / jobs,
    redis_cpu_us: (Math.max(0, after.cpu - before.cpu) * 1e6) / jobs,
    by_command: byCommand,
    usec_by_command: usecByCommand,
  };
}

// ---- workers in child processes ----

/** Starts a worker child and waits until it is ready. */
function startWorker(queue, concurrency) {
  const child = fork(self, [
    'worker', '--url', url.href, '--prefix', prefix,
    '--queue', queue, '--concurrency', String(concurrency),
  ]);
  return new Promise((resolve, reject) => {
    child.once('message', (m) => (m.type === 'ready' ? resolve(child) : reject(new Error(String(m)))));
    child.once('exit', (code) => reject(new Error(`worker exited with ${code}`)));
  });
}

/** Stops a worker child and returns its report. */
function stopWorker(child) {
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m));
    child.once('error', reject);
    child.send('stop');
  });
}

async function workerMain() {
  let ran = 0;
  let cpuAtGo = process.cpuUsage();
  const latencies = [];
  const worker = new Worker(
    args.queue,
    async (job) => {
      ran++;
      const t = job.data.t;
      if (t > 1) latencies.push(Math.max(0, nowUs() - t));
    },
    { connection, prefix, concurrency: Number(args.concurrency), autorun: false },
  );
  worker.on('error', (e) => console.error('worker error', e));
  await worker.waitUntilReady();
  process.on('message', async (m) => {
    if (m === 'go') {
      cpuAtGo = process.cpuUsage();
      worker.run().catch((e) => console.error('worker stopped', e));
    } else if (m === 'stop') {
      await worker.close();
      const cpu = process.cpuUsage(cpuAtGo);
      process.send(
        {
          type: 'report',
          ran,
          latencies_us: latencies,
          peak_rss_kb: process.resourceUsage().maxRSS,
          cpu_us: cpu.user + cpu.system,
        },
        () => process.exit(0),
      );
    }
  });
  process.send({ type: 'ready' });
}

/** Waits until no job of `queue` waits or runs; counts its own commands into `own`. */
async function waitEmpty(admin, queue, own) {
  const k = (s) => `${prefix}:${queue}:${s}`;
  for (;;) {
    const r = await admin.pipeline().llen(k('wait')).llen(k('active')).zcard(k('prioritized')).exec();
    own.calls.llen = (own.calls.llen ?? 0) + 2;
    own.calls.zcard = (own.calls.zcard ?? 0) + 1;
    own.reads += 1;
    if (r.every(([err, n]) => !err && n === 0)) return;
    await sleep(2);
  }
}

async function fill(queue, jobs, chunk, data = () => ({ t: 0 })) {
  for (let left = jobs; left > 0; ) {
    const k = Math.min(left, chunk);
    await queue.addBulk(Array.from({ length: k }, () => ({ name: 'noop', data: data() })));
    left -= k;
  }
}

// ---- the workloads ----

async function enqueue(admin) {
  const single = Number(args.single);
  const bulk = Number(args.bulk);
  const chunk = Number(args.chunk);
  const q1 = new Queue('enqueue-single', { connection, prefix });
  const q2 = new Queue('enqueue-bulk', { connection, prefix });
  await Promise.all([q1.waitUntilReady(), q2.waitUntilReady()]);
  for (let i = 0; i < 200; i++) await q1.add('noop', { t: 0 });
  await q2.addBulk([{ name: 'noop', data: { t: 0 } }]);

  const measure = async (jobs, work) => {
    const before = await snapshot(admin);
    const cpu = process.cpuUsage();
    const t0 = performance.now();
    await work();
    const secs = (performance.now() - t0) / 1000;
    const used = process.cpuUsage(cpu);
    const after = await snapshot(admin);
    const w = perJob(before, after, { calls: {}, reads: 0 }, jobs);
    w.client_cpu_us = (used.user + used.system) / jobs;
    return { rate: jobs / secs, per_job: w };
  };
  const s = await measure(single, async () => {
    for (let i = 0; i < single; i++) await q1.add('noop', { t: 0 });
  });
  const b = await measure(bulk, () => fill(q2, bulk, chunk));
  await Promise.all([q1.close(), q2.close()]);
  return { single: s, bulk: b };
}

async function drain(admin) {
  const jobs = Number(args.jobs);
  const concurrency = Number(args.concurrency);
  const procs = Number(args.procs);
  const name = `drain-c${concurrency}-p${procs}`;
  const queue = new Queue(name, { connection, prefix });
  await fill(queue, jobs, 1000);
  const workers = [];
  for (let i = 0; i < procs; i++) workers.push(await startWorker(name, concurrency));
  const own = { calls: {}, reads: 0 };
  const before = await snapshot(admin);
  const t0 = performance.now();
  for (const w of workers) w.send('go');
  await waitEmpty(admin, name, own);
  const secs = (performance.now() - t0) / 1000;
  const after = await snapshot(admin);
  const reports = [];
  for (const w of workers) reports.push(await stopWorker(w));
  const ran = reports.reduce((n, r) => n + r.ran, 0);
  if (ran < jobs) throw new Error(`${ran} of ${jobs} jobs ran`);
  await queue.close();
  const perJobWork = perJob(before, after, own, jobs);
  perJobWork.client_cpu_us = reports.reduce((n, r) => n + r.cpu_us, 0) / jobs;
  return {
    rate: jobs / secs,
    per_job: perJobWork,
    peak_rss_kb: Math.max(...reports.map((r) => r.peak_rss_kb)),
  };
}

async function latency(admin) {
  const rate = Number(args.rate);
  const warmup = Number(args['warmup-ms']) / 1000;
  const total = warmup + Number(args.seconds);
  const name = `latency-${rate}`;
  const queue = new Queue(name, { connection, prefix });
  await queue.waitUntilReady();
  const worker = await startWorker(name, Number(args.concurrency));
  worker.send('go');
  const pending = new Set();
  const start = performance.now();
  let sent = 0;
  for (;;) {
    await sleep(1);
    const elapsed = (performance.now() - start) / 1000;
    if (elapsed >= total) break;
    const due = Math.floor(elapsed * rate);
    const warm = elapsed < warmup;
    while (sent < due) {
      const p = queue.add('noop', { t: warm ? 1 : nowUs() });
      pending.add(p);
      p.finally(() => pending.delete(p));
      sent++;
    }
  }
  await Promise.all(pending);
  await waitEmpty(admin, name, { calls: {}, reads: 0 });
  const report = await stopWorker(worker);
  await queue.close();
  return { sent, latencies_us: report.latencies_us };
}

async function memory(admin) {
  const jobs = Number(args.jobs);
  const queue = new Queue('memory', { connection, prefix });
  await queue.waitUntilReady();
  const before = await snapshot(admin);
  await fill(queue, jobs, Number(args.chunk));
  const after = await snapshot(admin);
  await queue.close();
  return { bytes_per_job: Math.max(0, after.usedMemory - before.usedMemory) / jobs };
}

async function main() {
  const command = args._[0];
  if (command === 'worker') return workerMain();
  const run = { enqueue, drain, latency, memory }[command];
  if (!run) throw new Error(`unknown command ${command}: use enqueue, drain, latency or memory`);
  const admin = new IORedis(connection);
  const result = await run(admin);
  await admin.quit();
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
