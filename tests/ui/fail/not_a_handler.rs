// A type that is not a `#[job_handler]` cannot be registered: the trait's
// `on_unimplemented` message says what to do.

struct Mailer;

fn register<H: stevedore::JobHandler>(_handler: H) {}

fn add_to_worker(builder: stevedore::WorkerBuilder) -> stevedore::WorkerBuilder {
    builder.handler(Mailer)
}

fn main() {
    register(Mailer);
    let _ = add_to_worker;
}
