struct Mailer;

fn register<H: stevedore::JobHandler>(_handler: H) {}

fn main() {
    register(Mailer);
}
