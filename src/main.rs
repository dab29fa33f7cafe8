//! The `nook` binary: everything happens in [`nook::cli`].

fn main() {
    std::process::exit(nook::cli::main());
}
