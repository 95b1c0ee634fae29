//! A driver whose `main` lacks #[rayr::main]: its workers cannot serve tasks, and the
//! user must be told why instead of waiting forever.

#[rayr::remote]
fn one() -> u64 {
    1
}

fn main() {
    rayr::init().expect("init");
    match rayr::get(&one::remote()) {
        Ok(v) => println!("UNEXPECTED {v}"),
        Err(e) => println!("ERROR {e}"),
    }
    rayr::shutdown();
}
