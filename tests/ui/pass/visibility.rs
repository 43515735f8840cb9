// A `pub` handler in a module is usable from outside it by path, and a handler can be
// declared inside a function body.

mod jobs {
    use serde::{Deserialize, Serialize};
    use stevedore::{JobContext, JobError, job_handler};

    #[derive(Debug, Serialize, Deserialize)]
    pub struct SendEmail {
        pub to: String,
    }

    #[job_handler(name = "email.send", queue = "emails")]
    pub async fn send_email(job: SendEmail, _ctx: JobContext) -> Result<(), JobError> {
        let _ = job.to;
        Ok(())
    }
}

fn main() {
    use stevedore::JobHandler;

    let _job: stevedore::Job<jobs::send_email> = jobs::send_email::job(jobs::SendEmail {
        to: "ada@example.com".into(),
    });
    let _handler: jobs::send_email = jobs::send_email::handler();
    let _callable = jobs::send_email;
    assert_eq!(<jobs::send_email as JobHandler>::NAME, "email.send");

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Local {
        n: u32,
    }

    #[stevedore::job_handler(name = "local.job")]
    async fn local_job(job: Local, _ctx: stevedore::JobContext) -> Result<(), stevedore::JobError> {
        let _ = job.n;
        Ok(())
    }

    let _job: stevedore::Job<local_job> = local_job::job(Local { n: 1 });
    assert_eq!(<local_job as JobHandler>::NAME, "local.job");
}
