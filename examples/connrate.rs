//! New-connection rate, for `bench/tunnel.sh`: how many connections per second can be opened,
//! used for one round trip and closed through a tcp tunnel.
//!
//!   connrate echo PORT                       an echo server on 127.0.0.1:PORT
//!   connrate rate PORT SECONDS [PARALLEL]    connect, send 32 bytes, read them back, close;
//!                                            PARALLEL loops (default 16); prints conns/s
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    let port: u16 = arg(2).parse().unwrap_or_else(|_| usage());
    match arg(1) {
        "echo" => echo(port).await,
        "rate" => {
            let secs: u64 = arg(3).parse().unwrap_or_else(|_| usage());
            let parallel: usize = args.get(4).map_or(Ok(16), |p| p.parse()).unwrap_or_else(|_| usage());
            rate(port, Duration::from_secs(secs), parallel).await
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: connrate echo PORT | connrate rate PORT SECONDS [PARALLEL]");
    std::process::exit(2)
}

async fn echo(port: u16) {
    let l = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the echo port");
    loop {
        let Ok((mut s, _)) = l.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn rate(port: u16, dur: Duration, parallel: usize) {
    let until = Instant::now() + dur;
    let start = Instant::now();
    let loops: Vec<_> = (0..parallel)
        .map(|_| {
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                let msg = [b'x'; 32];
                while Instant::now() < until {
                    let once = async {
                        let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
                        s.set_nodelay(true)?;
                        s.write_all(&msg).await?;
                        let mut back = [0u8; 32];
                        s.read_exact(&mut back).await?;
                        Ok::<_, std::io::Error>(back == msg)
                    };
                    match tokio::time::timeout(Duration::from_secs(5), once).await {
                        Ok(Ok(true)) => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for l in loops {
        let (o, f) = l.await.unwrap_or((0, 1));
        ok += o;
        failed += f;
    }
    let secs = start.elapsed().as_secs_f64();
    println!("{:.0} {ok} {failed}", ok as f64 / secs);
}
