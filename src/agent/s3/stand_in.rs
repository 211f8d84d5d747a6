//! A stand-in S3 server for the transport's tests: plain HTTP/1.1 on 127.0.0.1, answering
//! each request as a script says, reading request bodies at a chosen pace and trickling
//! answers, so slow, stalled and failing servers can be had on demand.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A request as the stand-in saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `POST`, `PUT`, ...
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Bytes of body received.
    pub body_len: usize,
}

/// How to answer one request.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
    /// Send the body one byte per this pause instead of at once.
    pub trickle: Option<Duration>,
    /// Never answer (a server that hangs).
    pub hang: bool,
}

impl Reply {
    /// `status` with `body`.
    pub fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            trickle: None,
            hang: false,
        }
    }

    /// A plausible success for what `seen` asked: an upload ID, a part's ETag, a listing.
    pub fn success_for(seen: &Seen) -> Reply {
        if seen.method == "POST" && seen.target.contains("uploads") {
            Reply::new(
                200,
                "<InitiateMultipartUploadResult><UploadId>up-1</UploadId>\
                 </InitiateMultipartUploadResult>",
            )
        } else if seen.method == "PUT" && seen.target.contains("partNumber") {
            let mut reply = Reply::new(200, "");
            reply.headers.push(("ETag".into(), "\"etag\"".into()));
            reply
        } else if seen.method == "POST" {
            Reply::new(
                200,
                "<CompleteMultipartUploadResult><Key>k</Key></CompleteMultipartUploadResult>",
            )
        } else {
            Reply::new(200, "<ListBucketResult></ListBucketResult>")
        }
    }
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

/// The running stand-in; it stops when dropped.
pub struct StandIn {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    /// Serves with `script(index, request)`, reading request bodies at most `read_rate`
    /// bytes per second (unlimited when `None`).
    pub async fn start(
        read_rate: Option<usize>,
        script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
    ) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    tokio::spawn(serve(stream, read_rate, script.clone(), seen.clone()));
                }
            })
        };
        StandIn {
            endpoint,
            seen,
            task,
        }
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("not poisoned").clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: TcpStream,
    read_rate: Option<usize>,
    script: Arc<Script>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if stream.read_line(&mut header).await.unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut buf = vec![0u8; 64 << 10];
        let mut received = 0;
        while received < length {
            let want = (length - received).min(buf.len());
            let Ok(n) = stream.read(&mut buf[..want]).await else {
                return;
            };
            if n == 0 {
                return;
            }
            received += n;
            if let Some(rate) = read_rate {
                tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
            }
        }
        let request = Seen {
            method,
            target,
            body_len: received,
        };
        let index = {
            let mut seen = seen.lock().expect("not poisoned");
            seen.push(request.clone());
            seen.len() - 1
        };
        let reply = script(index, &request);
        if reply.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} X\r\ncontent-length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (name, value) in &reply.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let stream = stream.get_mut();
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        match reply.trickle {
            None => {
                if stream.write_all(reply.body.as_bytes()).await.is_err() {
                    return;
                }
            }
            Some(pause) => {
                for byte in reply.body.as_bytes() {
                    if stream.write_all(&[*byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}
