//! The quickstart: tasks, nested tasks, put/get, a zero-copy slice, and an error, on an
//! embedded cluster (nothing to start by hand). Afterwards, look at what happened:
//! `rayr list tasks`, `rayr events --kind task_failed`.

use rayr::prelude::*;

#[rayr::remote]
fn square(x: u64) -> u64 {
    x * x
}

#[rayr::remote(max_retries = 3)]
fn total(xs: Vec<u64>) -> u64 {
    xs.iter().sum()
}

#[rayr::remote]
fn sum_of_squares(n: u64) -> u64 {
    // A task that submits tasks: its worker owns these results.
    let refs: Vec<ObjectRef<u64>> = (0..n).map(square::remote).collect();
    rayr::get_all(&refs).unwrap().iter().sum()
}

#[rayr::remote]
fn may_fail(x: u64) -> Result<u64, String> {
    if x == 0 { Err("zero is not allowed".into()) } else { Ok(x) }
}

#[rayr::main]
fn main() -> rayr::Result<()> {
    let start = std::time::Instant::now();
    rayr::init()?;
    let first = rayr::get(&square::remote(7))?;
    println!("square(7) = {first}   (init to first result: {:.1} ms)", start.elapsed().as_secs_f64() * 1e3);

    let refs: Vec<ObjectRef<u64>> = (0..1000).map(square::remote).collect();
    let all: Vec<u64> = rayr::get_all(&refs)?;
    println!("1000 squares, sum = {}", all.iter().sum::<u64>());

    println!("sum of squares below 10, computed by a nested task = {}", rayr::get(&sum_of_squares::remote(10))?);

    let big = rayr::put(vec![7u64; 1_000_000])?;
    println!("total of a 1M-element put = {}", rayr::get(&total::remote(&big))?);

    let arr = rayr::put_slice(&vec![1.5f32; 25_000_000])?;
    let view = rayr::get_slice::<f32>(&arr)?;
    println!("100 MB slice read in place: first = {}, len = {}", view[0], view.len());

    match rayr::get(&may_fail::remote(0)) {
        Err(e @ rayr::Error::TaskFailed { .. }) => println!("may_fail(0) failed as expected:\n  {e}"),
        other => panic!("expected TaskFailed, got {other:?}"),
    }
    println!("session: {}", rayr::session_dir()?.display());
    Ok(())
}
