// DataFusion allocates a lot of small objects (plans, expressions, batches): mimalloc is
// markedly faster than the system allocator for it (see bench/).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(weir::cli::main());
}
