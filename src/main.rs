fn main() {
    std::process::exit(weir::cli::main());
}
