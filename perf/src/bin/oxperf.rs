//! oxperf: bdevperf-like load against oxstor bdevs (and, later, NVMe/TCP targets).

use clap::{Args, Parser, Subcommand, ValueEnum};
use oxstor_perf::engine::RunOptions;
use oxstor_perf::run::{run_bdev, BdevRun};
use oxstor_perf::size::parse_size;
use oxstor_perf::workload::Workload;
use oxstor_perf::{config, net, output, PerfError};
use oxstor_reactor::CoreMask;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "oxperf",
    version,
    about = "Block I/O load generator for oxstor (bdevperf-like)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run I/O against bdevs created in-process from an SPDK JSON config (like bdevperf).
    Bdev(BdevArgs),
    /// Run I/O against an NVMe-oF/TCP target (like spdk_nvme_perf): one queue pair per core.
    Nvme(NvmeArgs),
    /// Kernel-TCP baselines over loopback: round-trip latency and single-stream throughput.
    #[command(subcommand)]
    Net(NetCommand),
}

#[derive(Subcommand)]
enum NetCommand {
    /// Ping-pong of SIZE-byte messages with an echo server thread (TCP_NODELAY): RTT percentiles.
    Rtt(RttArgs),
    /// One client streams writes to a sink server for SECONDS (like single-stream iperf3): MiB/s.
    Stream(StreamArgs),
}

/// Options both net tests share.
#[derive(Args)]
struct NetCommon {
    /// Server address (port 0: any free port).
    #[arg(long = "addr", value_name = "IP:PORT", default_value = "127.0.0.1:0")]
    addr: String,
    /// Pin the client to the mask's first core and the server to its last (0x3: two cores).
    #[arg(short = 'c', long = "cpumask", value_name = "CORE_MASK")]
    core_mask: Option<String>,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
}

#[derive(Args)]
struct RttArgs {
    /// Round trips to measure.
    #[arg(short = 'n', long = "count", default_value_t = 20000)]
    count: u64,
    /// Message size in bytes (4096, 4k).
    #[arg(long = "size", value_name = "BYTES", default_value = "64")]
    size: String,
    #[command(flatten)]
    common: NetCommon,
}

#[derive(Args)]
struct StreamArgs {
    /// Seconds to stream.
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 5.0
    )]
    time: f64,
    /// Bytes per write (131072, 128k).
    #[arg(
        short = 'o',
        long = "io-size",
        value_name = "BYTES",
        default_value = "131072"
    )]
    io_size: String,
    #[command(flatten)]
    common: NetCommon,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    Text,
    Json,
}

/// Options every kind of run shares.
#[derive(Args)]
struct Common {
    /// Queue depth: I/Os kept in flight per job.
    #[arg(short = 'q', long = "queue-depth", value_name = "DEPTH")]
    queue_depth: u32,
    /// I/O size in bytes (4096, 4k, 128K, 1M); a multiple of the block size.
    #[arg(short = 'o', long = "io-size", value_name = "BYTES")]
    io_size: String,
    /// read, write, randread, randwrite, rw, randrw or verify.
    #[arg(short = 'w', long = "workload", value_name = "WORKLOAD")]
    workload: String,
    /// Run time in seconds (after the warm-up).
    #[arg(short = 't', long = "time", value_name = "SECONDS")]
    time: f64,
    /// Core mask of the reactors (0x3, [0,1]); each bdev gets one job per core.
    #[arg(
        short = 'm',
        long = "cpumask",
        value_name = "CORE_MASK",
        default_value = "0x1"
    )]
    core_mask: String,
    /// Percentage of reads for rw / randrw (default 50).
    #[arg(short = 'M', long = "rwmixread", value_name = "PERCENT")]
    rwmixread: Option<u8>,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "text")]
    output: OutputFormat,
    /// Spin instead of blocking when a reactor is idle.
    #[arg(long = "no-backoff")]
    no_backoff: bool,
    /// Seconds of I/O before measuring starts.
    #[arg(long = "warmup", value_name = "SECONDS", default_value_t = 0.0)]
    warmup: f64,
}

#[derive(Args)]
struct BdevArgs {
    /// SPDK JSON config whose bdev calls create the bdevs to test.
    #[arg(short = 'c', long = "json", value_name = "CONFIG")]
    json: String,
    /// Bdev to run on (repeatable); default: every bdev no other bdev claims.
    #[arg(short = 'b', long = "bdev", value_name = "BDEV_NAME")]
    bdevs: Vec<String>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
struct NvmeArgs {
    /// Transport ID: 'trtype:tcp traddr:IP trsvcid:PORT subnqn:NQN'.
    #[arg(short = 'r', long = "transport", value_name = "TRID")]
    trid: String,
    /// Core mask as spdk_nvme_perf spells it; the same as -m.
    #[arg(short = 'c', value_name = "CORE_MASK")]
    core_mask_c: Option<String>,
    #[command(flatten)]
    common: Common,
}

/// Far beyond any device; keeps a typo from allocating gigabytes of descriptors.
const MAX_QUEUE_DEPTH: u32 = 65536;

fn seconds(what: &str, v: f64, allow_zero: bool) -> Result<Duration, PerfError> {
    if !v.is_finite() || v < 0.0 || (!allow_zero && v == 0.0) || v > 1e7 {
        return Err(PerfError::usage(format!(
            "{what} must be a positive number of seconds, got {v}"
        )));
    }
    Ok(Duration::from_secs_f64(v))
}

fn options(c: &Common) -> Result<RunOptions, PerfError> {
    let workload: Workload = c.workload.parse()?;
    if c.queue_depth == 0 || c.queue_depth > MAX_QUEUE_DEPTH {
        return Err(PerfError::usage(format!(
            "-q (queue depth) must be between 1 and {MAX_QUEUE_DEPTH}, got {}",
            c.queue_depth
        )));
    }
    if c.rwmixread.is_some() && !workload.is_mixed() {
        return Err(PerfError::usage(format!(
            "-M (rwmixread) applies only to rw and randrw, not {workload}"
        )));
    }
    let rwmixread = c.rwmixread.unwrap_or(50);
    if rwmixread > 100 {
        return Err(PerfError::usage(format!(
            "-M (rwmixread) must be between 0 and 100, got {rwmixread}"
        )));
    }
    Ok(RunOptions {
        queue_depth: c.queue_depth,
        io_size: parse_size(&c.io_size)?,
        workload,
        rwmixread,
        duration: seconds("-t", c.time, false)?,
        warmup: seconds("--warmup", c.warmup, true)?,
        ..Default::default()
    })
}

fn net_common(c: &NetCommon) -> Result<(std::net::SocketAddr, Option<CoreMask>), PerfError> {
    let addr = c
        .addr
        .parse()
        .map_err(|_| PerfError::usage(format!("--addr '{}' is not IP:PORT", c.addr)))?;
    let cores = match &c.core_mask {
        Some(m) => Some(CoreMask::parse(m).map_err(|e| PerfError::usage(e.to_string()))?),
        None => None,
    };
    Ok((addr, cores))
}

fn print_result(json: bool, text: String, value: serde_json::Value) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
        );
    } else {
        print!("{text}");
    }
}

fn run_net(cmd: &NetCommand) -> Result<ExitCode, PerfError> {
    match cmd {
        NetCommand::Rtt(a) => {
            let (addr, cores) = net_common(&a.common)?;
            let r = net::rtt(&net::RttOptions {
                addr,
                count: a.count,
                size: parse_size(&a.size)? as usize,
                cores,
            })?;
            print_result(
                a.common.output == OutputFormat::Json,
                net::rtt_text(&r),
                net::rtt_json(&r),
            );
        }
        NetCommand::Stream(a) => {
            let (addr, cores) = net_common(&a.common)?;
            let r = net::stream(&net::StreamOptions {
                addr,
                duration: seconds("-t", a.time, false)?,
                write_size: parse_size(&a.io_size)? as usize,
                cores,
            })?;
            print_result(
                a.common.output == OutputFormat::Json,
                net::stream_text(&r),
                net::stream_json(&r),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> Result<ExitCode, PerfError> {
    let mask_override = match &cli.command {
        Command::Nvme(a) => a.core_mask_c.clone(),
        Command::Bdev(_) => None,
        Command::Net(cmd) => return run_net(cmd),
    };
    let (c, calls, bdevs) = match &cli.command {
        Command::Bdev(args) => {
            let text = std::fs::read_to_string(&args.json)
                .map_err(|e| PerfError::usage(format!("cannot read config {}: {e}", args.json)))?;
            let calls = config::parse(&text)
                .map_err(|e| PerfError::usage(format!("{}: {e}", args.json)))?;
            (&args.common, calls, args.bdevs.clone())
        }
        Command::Net(_) => unreachable!("handled above"),
        Command::Nvme(args) => {
            // The remote namespace becomes an ordinary bdev; the bdev engine drives it.
            let params = oxstor_nvme::host::parse_transport_id(&args.trid, "Nvme0")
                .map_err(|e| PerfError::usage(format!("-r '{}': {e}", args.trid)))?;
            let call = config::Call {
                subsystem: "bdev".into(),
                method: "bdev_nvme_attach_controller".into(),
                params: serde_json::to_value(&params)
                    .map_err(|e| PerfError::usage(e.to_string()))?,
            };
            (&args.common, vec![call], Vec::new())
        }
    };
    let opts = options(c)?;
    let mask = mask_override.as_deref().unwrap_or(&c.core_mask);
    let cores = CoreMask::parse(mask).map_err(|e| PerfError::usage(e.to_string()))?;
    let run = BdevRun {
        config: calls,
        cores,
        backoff: !c.no_backoff,
        bdevs,
        options: opts,
    };
    let json = c.output == OutputFormat::Json;
    let duration = c.time;
    let report = run_bdev(&run, &mut |_| {
        if !json {
            println!("{}", output::header(duration));
            let _ = std::io::stdout().flush();
        }
    })?;
    if json {
        let v = output::json(&report);
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        );
    } else {
        print!("{}", output::text(&report));
    }
    for j in &report.jobs {
        for e in &j.errors {
            eprintln!("oxperf: {} (core {}): {e}", j.bdev, j.cpu);
        }
        let shown = j.errors.len() as u64;
        let total = j.failed + j.mismatches;
        if total > shown {
            eprintln!(
                "oxperf: {} (core {}): ... and {} more",
                j.bdev,
                j.cpu,
                total - shown
            );
        }
    }
    if report.is_clean() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "oxperf: FAILED: {} I/O error(s), {} verify mismatch(es)",
            report.failed(),
            report.mismatches()
        );
        Ok(ExitCode::from(1))
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(PerfError::Usage(m)) => {
            eprintln!("oxperf: error: {m}");
            ExitCode::from(2)
        }
        Err(PerfError::Run(m)) => {
            eprintln!("oxperf: error: {m}");
            ExitCode::from(1)
        }
    }
}
