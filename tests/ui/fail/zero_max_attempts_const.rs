// 0 is never an attempt budget: a handler's options made as a constant with
// `max_attempts(0)` do not compile.

use stevedore::HandlerOptions;

const OPTIONS: HandlerOptions = HandlerOptions::new().max_attempts(0);

fn main() {
    let _ = OPTIONS;
}
