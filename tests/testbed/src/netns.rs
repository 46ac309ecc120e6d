//! Running code inside a network namespace: a thread that entered it with `setns`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// Moves the calling thread into the network namespace `file` refers to.
pub(crate) fn enter(file: &File) -> std::io::Result<()> {
    // SAFETY: `file` is an open descriptor for the whole call; setns only reads it and changes
    // the calling thread's network namespace, which is what this thread is for.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
}

pub(crate) fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a current-thread tokio runtime") // only fails without resources
}

/// A future running on its own thread inside a namespace ([`crate::Gateway::spawn_in`]).
///
/// Await it (from any runtime) or [`NsTask::join`] it; either gives the future's output, and
/// a panic in the thread is resumed in the caller.
#[derive(Debug)]
pub struct NsTask<T> {
    thread: Option<JoinHandle<()>>,
    output: oneshot::Receiver<T>,
}

impl<T: Send + 'static> NsTask<T> {
    pub(crate) fn spawn<F, Fut>(namespace: File, name: String, f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let (tx, output) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("netns {name}"))
            .spawn(move || {
                if let Err(error) = enter(&namespace) {
                    panic!("entering network namespace {name}: {error}");
                }
                drop(namespace);
                let runtime = current_thread_runtime();
                let _ = tx.send(runtime.block_on(f()));
            })
            .expect("spawning a thread"); // only fails without resources
        Self { thread: Some(thread), output }
    }

    /// Blocks until the future is done and returns its output.
    pub fn join(mut self) -> T {
        self.join_thread();
        self.output.try_recv().expect("the namespace thread ended without an output")
    }

    fn join_thread(&mut self) {
        if let Some(thread) = self.thread.take()
            && let Err(panic) = thread.join()
        {
            std::panic::resume_unwind(panic);
        }
    }
}

impl<T: Send + 'static> Future for NsTask<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match Pin::new(&mut self.output).poll(cx) {
            Poll::Ready(Ok(output)) => {
                self.join_thread();
                Poll::Ready(output)
            }
            Poll::Ready(Err(_)) => {
                // The sender is gone without a value: the thread panicked.
                self.join_thread();
                panic!("the namespace thread ended without an output");
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A long-lived current-thread tokio runtime on a thread inside a namespace
/// ([`crate::Gateway::runtime`]), for tasks that outlive one call, such as a whole node.
///
/// Only [`NsRuntime::spawn`] (or [`NsRuntime::handle`]`.spawn`) runs code in the namespace:
/// `Handle::block_on` would run the future on the calling thread, outside it. Dropping the
/// `NsRuntime` stops the runtime (its tasks are cancelled) and joins the thread.
#[derive(Debug)]
pub struct NsRuntime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NsRuntime {
    pub(crate) fn start(namespace: File, name: String) -> std::io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread =
            std::thread::Builder::new().name(format!("netns rt {name}")).spawn(move || {
                if let Err(error) = enter(&namespace) {
                    let _ = ready_tx.send(Err(error));
                    return;
                }
                drop(namespace);
                let runtime = current_thread_runtime();
                let _ = ready_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the namespace runtime thread died"))??;
        Ok(Self { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Spawns `future` on the namespace's runtime.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(future)
    }

    /// The runtime's handle (spawn only; see the type's docs).
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
