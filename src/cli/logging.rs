//! Log lines: the filter for `-v` and `--log-format`, and a writer that redacts secrets.

use super::*;

pub(super) fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    // Without -v the CLI's own lines say what happens; logs are for -v and JSON consumers.
    let daemon = matches!(cli.command, Command::Serve { once: false, .. });
    let default = match (cli.verbose, cli.log_format) {
        // A daemon's log is its voice.
        (0, _) if daemon => "weir=info,warn",
        (0, LogFormat::Text) => "weir=off,error",
        (0, LogFormat::Json) | (1, _) => "weir=info,warn",
        (2, _) => "weir=debug,info",
        _ => "trace",
    };
    // The HTTP client's own debug lines name the hosts it connects to (webhooks are secrets):
    // kept at warnings unless RUST_LOG asks.
    let default = if cli.verbose < 3 {
        format!("{default},reqwest=warn,hyper=warn,hyper_util=warn")
    } else {
        default.to_string()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let writer = RedactingWriter;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_target(false);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
    };
}

/// Writes log lines to stderr with every known secret replaced.
#[derive(Clone, Copy)]
pub(super) struct RedactingWriter;

pub(super) struct RedactingHandle(Vec<u8>);

impl Write for RedactingHandle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for RedactingHandle {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let _ = std::io::stderr().write_all(crate::secrets::global().redact(&text).as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingWriter {
    type Writer = RedactingHandle;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingHandle(Vec::new())
    }
}
