//! The `#[job_handler]` attribute of [stevedore](https://docs.rs/stevedore).
//!
//! It keeps the annotated `async fn` exactly as written (so a unit test can call it) and
//! adds a type of the same name, in the type namespace, that implements
//! `stevedore::JobHandler`: `send_email::job(payload)` builds a typed job and
//! `send_email::handler()` registers the handler with a worker. Options and the signature
//! are checked here, with errors pointing at the offending token; the original function is
//! emitted even then, so the rest of the crate still type-checks.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, LitInt, LitStr, Path, ReturnType, Token};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(queue);
    syn::custom_keyword!(max_attempts);
    syn::custom_keyword!(timeout);
    syn::custom_keyword!(priority);
    syn::custom_keyword!(backoff);
    syn::custom_keyword!(backoff_base);
    syn::custom_keyword!(backoff_cap);
    syn::custom_keyword!(keep_succeeded);
    syn::custom_keyword!(rate_limit);
    syn::custom_keyword!(rate_limit_per_key);
    syn::custom_keyword!(limit_key);
    syn::custom_keyword!(concurrency_limit);
    syn::custom_keyword!(concurrency_limit_per_key);
}

/// Turns `async fn name(payload: T, ctx: JobContext) -> Result<(), E>` into a job handler.
///
/// `E` must convert into `stevedore::JobError`: `JobError` itself, any `std::error::Error +
/// Send + Sync + 'static`, `anyhow::Error` and `Box<dyn Error + Send + Sync>` do. Options, all
/// optional:
/// - `name = "email.send"`: the job type on the wire (default: the function's name). Keep it
///   stable: queued jobs are dispatched by it.
/// - `queue = "emails"`: the default queue (default `"default"`).
/// - `max_attempts = 5`: attempts before the job is dead-lettered.
/// - `timeout = "30s"`: how long one attempt may run (humantime: `"500ms"`, `"2m"`...).
/// - `priority = "high"`: default priority (`"high"`, `"normal"`, `"low"`).
/// - `backoff = "exponential"`: retry delays (`"exponential"`, `"linear"`, `"fixed"`), with
///   `backoff_base = "1s"` (first delay, or the step) and `backoff_cap = "10m"` (longest
///   delay). Unset: the worker's retry policy.
/// - `keep_succeeded = "1h"`: how long a succeeded job's status is kept (`"0s"`: nothing is
///   written on success). Unset: the worker's setting for the queue, else the client's.
/// - `rate_limit = "50/s"`: at most 50 jobs of this type start per second across every
///   worker (`"100/1m"`, `"10/500ms burst 1"`; see `stevedore::RateLimit`).
/// - `limit_key = "customer_id"` with `rate_limit_per_key = "5/s"`: at most 5 jobs per
///   second for each value of the payload's field `customer_id` (its `to_string()`; a
///   dotted path such as `"account.id"` reaches into nested fields).
/// - `concurrency_limit = 2`: at most 2 jobs of this type run at once across every worker;
///   `concurrency_limit_per_key = 1` (with `limit_key`): at most 1 per key.
/// - `crate = "path::to::stevedore"`: where the runtime crate is, when re-exported.
#[proc_macro_attribute]
pub fn job_handler(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item2: TokenStream2 = item.clone().into();
    let func = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => {
            let e = e.to_compile_error();
            return quote!(#e #item2).into();
        }
    };
    let args = syn::parse::<Args>(attr);
    match expand(args, &func) {
        Ok(tokens) => tokens.into(),
        Err(e) => {
            let e = e.to_compile_error();
            quote!(#e #func).into()
        }
    }
}

#[derive(Default)]
struct Args {
    name: Option<LitStr>,
    queue: Option<LitStr>,
    max_attempts: Option<LitInt>,
    timeout: Option<LitStr>,
    keep_succeeded: Option<LitStr>,
    priority: Option<LitStr>,
    backoff: Option<LitStr>,
    backoff_base: Option<LitStr>,
    backoff_cap: Option<LitStr>,
    rate_limit: Option<LitStr>,
    rate_limit_per_key: Option<LitStr>,
    limit_key: Option<LitStr>,
    concurrency_limit: Option<LitInt>,
    concurrency_limit_per_key: Option<LitInt>,
    krate: Option<LitStr>,
}

fn set<T>(slot: &mut Option<T>, value: T, span: Span, what: &str) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(span, format!("duplicate `{what}` option")));
    }
    *slot = Some(value);
    Ok(())
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        while !input.is_empty() {
            let look = input.lookahead1();
            if look.peek(kw::name) {
                let k: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.name, input.parse()?, k.span, "name")?;
            } else if look.peek(kw::queue) {
                let k: kw::queue = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.queue, input.parse()?, k.span, "queue")?;
            } else if look.peek(kw::max_attempts) {
                let k: kw::max_attempts = input.parse()?;
                input.parse::<Token![=]>()?;
                set(
                    &mut args.max_attempts,
                    input.parse()?,
                    k.span,
                    "max_attempts",
                )?;
            } else if look.peek(kw::timeout) {
                let k: kw::timeout = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.timeout, input.parse()?, k.span, "timeout")?;
            } else if look.peek(kw::keep_succeeded) {
                let k: kw::keep_succeeded = input.parse()?;
                input.parse::<Token![=]>()?;
                set(
                    &mut args.keep_succeeded,
                    input.parse()?,
                    k.span,
                    "keep_succeeded",
                )?;
            } else if look.peek(kw::concurrency_limit_per_key) {
                let k: kw::concurrency_limit_per_key = input.parse()?;
                input.parse::<Token![=]>()?;
                set(
                    &mut args.concurrency_limit_per_key,
                    input.parse()?,
                    k.span,
                    "concurrency_limit_per_key",
                )?;
            } else if look.peek(kw::concurrency_limit) {
                let k: kw::concurrency_limit = input.parse()?;
                input.parse::<Token![=]>()?;
                set(
                    &mut args.concurrency_limit,
                    input.parse()?,
                    k.span,
                    "concurrency_limit",
                )?;
            } else if look.peek(kw::rate_limit_per_key) {
                let k: kw::rate_limit_per_key = input.parse()?;
                input.parse::<Token![=]>()?;
                set(
                    &mut args.rate_limit_per_key,
                    input.parse()?,
                    k.span,
                    "rate_limit_per_key",
                )?;
            } else if look.peek(kw::rate_limit) {
                let k: kw::rate_limit = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.rate_limit, input.parse()?, k.span, "rate_limit")?;
            } else if look.peek(kw::limit_key) {
                let k: kw::limit_key = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.limit_key, input.parse()?, k.span, "limit_key")?;
            } else if look.peek(kw::backoff_base) {
                let k: kw::backoff_base = input.parse()?;
                input.parse::<Token![=]>()?;
                set(
                    &mut args.backoff_base,
                    input.parse()?,
                    k.span,
                    "backoff_base",
                )?;
            } else if look.peek(kw::backoff_cap) {
                let k: kw::backoff_cap = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.backoff_cap, input.parse()?, k.span, "backoff_cap")?;
            } else if look.peek(kw::backoff) {
                let k: kw::backoff = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.backoff, input.parse()?, k.span, "backoff")?;
            } else if look.peek(kw::priority) {
                let k: kw::priority = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.priority, input.parse()?, k.span, "priority")?;
            } else if look.peek(Token![crate]) {
                let k: Token![crate] = input.parse()?;
                input.parse::<Token![=]>()?;
                set(&mut args.krate, input.parse()?, k.span, "crate")?;
            } else {
                return Err(look.error());
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
}

/// Job types and queue names: `^[A-Za-z0-9_.-]{1,64}$`, not dots only, as the runtime
/// checks too.
fn check_name(lit: &LitStr, what: &str) -> syn::Result<String> {
    let v = lit.value();
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.bytes().any(|b| b != b'.')
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(v)
    } else {
        Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid {what} {v:?}: use 1 to 64 characters from A-Z a-z 0-9 _ . -, not only dots"
            ),
        ))
    }
}

/// Reads a rate limit as `stevedore::RateLimit` does (`"50/s"`, `"100/1m"`, `"10/500ms
/// burst 1"`): count, period in ms, burst.
fn parse_rate(text: &str) -> Result<(u32, u64, Option<u32>), String> {
    let mut words = text.split_whitespace();
    let rate = words.next().ok_or("it is empty")?;
    let burst = match (words.next(), words.next(), words.next()) {
        (None, _, _) => None,
        (Some("burst"), Some(n), None) => match n.parse::<u32>() {
            Ok(0) | Err(_) => {
                return Err(format!("burst {n:?} must be a whole number of at least 1"));
            }
            Ok(b) => Some(b),
        },
        _ => return Err("expected `<count>/<period>` and an optional `burst <n>`".into()),
    };
    let (count, period) = rate.split_once('/').ok_or("expected `<count>/<period>`")?;
    let count = match count.parse::<u32>() {
        Ok(0) => return Err("a rate limit of 0 jobs lets nothing run".into()),
        Ok(n) => n,
        Err(_) => return Err(format!("count {count:?} is not a whole number")),
    };
    let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
        period.to_string()
    } else {
        format!("1{period}")
    };
    let per = humantime::parse_duration(&period).map_err(|e| e.to_string())?;
    if per.as_millis() == 0 {
        return Err("the period must be at least 1 ms".into());
    }
    if per.as_secs() > 7 * 24 * 3600 {
        return Err("the period may be at most 7 days".into());
    }
    Ok((
        count,
        u64::try_from(per.as_millis()).unwrap_or(u64::MAX),
        burst,
    ))
}

/// True for a type written as `JobContext` or a path ending in it.
fn is_job_context(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| s.ident == "JobContext"),
        syn::Type::Reference(r) => is_job_context(&r.elem),
        syn::Type::Paren(p) => is_job_context(&p.elem),
        syn::Type::Group(g) => is_job_context(&g.elem),
        _ => false,
    }
}

/// The mistakes in `(payload, ctx)` whose compiler errors would not say what to write:
/// arguments swapped, or either one borrowed.
fn check_arguments(payload: &syn::Type, ctx: &syn::Type) -> Vec<syn::Error> {
    let mut errors = Vec::new();
    if is_job_context(payload) && !is_job_context(ctx) {
        errors.push(syn::Error::new(
            payload.span(),
            "the payload comes first: write `(payload: T, ctx: JobContext)`",
        ));
        return errors;
    }
    if let syn::Type::Reference(r) = payload {
        errors.push(syn::Error::new_spanned(
            r,
            format!(
                "a job handler takes its payload by value: write `{}` without the `&` (each attempt decodes a payload of its own)",
                r.elem.to_token_stream()
            ),
        ));
    }
    if let syn::Type::Reference(r) = ctx
        && is_job_context(ctx)
    {
        errors.push(syn::Error::new_spanned(
            r,
            "a job handler takes its context by value: write `ctx: JobContext` (it is cheap to clone)",
        ));
    }
    errors
}

fn expand(args: syn::Result<Args>, func: &ItemFn) -> syn::Result<TokenStream2> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    let args = args.unwrap_or_else(|e| {
        push(e);
        Args::default()
    });
    let sig = &func.sig;

    if sig.asyncness.is_none() {
        push(syn::Error::new(
            sig.fn_token.span(),
            "#[job_handler] requires an `async fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        let span = match (sig.generics.params.first(), &sig.generics.where_clause) {
            (Some(param), _) => param.span(),
            (None, Some(w)) => w.where_token.span,
            (None, None) => sig.generics.span(),
        };
        push(syn::Error::new(
            span,
            "a job handler cannot be generic: give the payload a concrete type",
        ));
    }
    if let ReturnType::Default = sig.output {
        push(syn::Error::new(
            sig.paren_token.span.close(),
            "a job handler must return `Result<(), E>` where `E` converts into `stevedore::JobError` (`JobError`, any `std::error::Error`, `anyhow::Error`)",
        ));
    }
    let mut typed = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => push(syn::Error::new(
                r.self_token.span,
                "a job handler cannot take `self`",
            )),
            FnArg::Typed(pt) => typed.push(pt),
        }
    }
    if typed.len() != 2 {
        push(syn::Error::new(
            sig.paren_token.span.join(),
            format!(
                "a job handler takes exactly two arguments, `(payload: T, ctx: JobContext)`, found {}",
                typed.len()
            ),
        ));
    }

    if let [payload, ctx] = typed.as_slice() {
        check_arguments(&payload.ty, &ctx.ty)
            .into_iter()
            .for_each(&mut push);
    }

    let fn_ident = &sig.ident;
    let name = match &args.name {
        Some(l) => check_name(l, "job type")
            .map_err(&mut push)
            .unwrap_or_default(),
        None => fn_ident.to_string(),
    };
    let queue = match &args.queue {
        Some(l) => check_name(l, "queue")
            .map_err(&mut push)
            .unwrap_or_default(),
        None => "default".to_string(),
    };
    let mut options = TokenStream2::new();
    if let Some(l) = &args.max_attempts {
        match l.base10_parse::<u32>() {
            Ok(0) | Err(_) => push(syn::Error::new(
                l.span(),
                "max_attempts must be a whole number from 1 to 4294967295",
            )),
            Ok(n) => options.extend(quote!(.max_attempts(#n))),
        }
    }
    let krate_path: Path = match &args.krate {
        Some(l) => l
            .parse()
            .map_err(|_| {
                push(syn::Error::new(
                    l.span(),
                    "`crate` must be a path to stevedore, like \"::stevedore\" or \"crate::reexport::stevedore\"",
                ))
            })
            .unwrap_or_else(|()| syn::parse_quote!(::stevedore)),
        None => syn::parse_quote!(::stevedore),
    };
    // The expansion names stevedore through one `use`, so a `crate` path that does not
    // resolve is one error, on the string.
    let alias_span = args
        .krate
        .as_ref()
        .map_or_else(Span::call_site, |l| Span::call_site().located_at(l.span()));
    let alias = syn::Ident::new("__stevedore", alias_span);
    let use_krate = quote_spanned!(alias_span=> use #krate_path as #alias;);
    let krate: Path = syn::parse_quote!(#alias);
    if let Some(l) = &args.timeout {
        match humantime::parse_duration(&l.value()) {
            Ok(d) if !d.is_zero() => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                options.extend(quote!(.timeout(#krate::__private::Duration::from_millis(#ms))));
            }
            Ok(_) => push(syn::Error::new(
                l.span(),
                "timeout must be longer than zero",
            )),
            Err(e) => push(syn::Error::new(
                l.span(),
                format!("invalid timeout: {e} (examples: \"30s\", \"500ms\", \"2m\")"),
            )),
        }
    }
    if let Some(l) = &args.keep_succeeded {
        match humantime::parse_duration(&l.value()) {
            Ok(d) => {
                let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
                options
                    .extend(quote!(.keep_succeeded(#krate::__private::Duration::from_millis(#ms))));
            }
            Err(e) => push(syn::Error::new(
                l.span(),
                format!("invalid keep_succeeded: {e} (examples: \"1h\", \"7d\", \"0s\")"),
            )),
        }
    }
    if let Some(l) = &args.priority {
        let variant = match l.value().as_str() {
            "high" => Some(quote!(High)),
            "normal" => Some(quote!(Normal)),
            "low" => Some(quote!(Low)),
            _ => {
                push(syn::Error::new(
                    l.span(),
                    "priority must be \"high\", \"normal\" or \"low\"",
                ));
                None
            }
        };
        if let Some(v) = variant {
            options.extend(quote!(.priority(#krate::Priority::#v)));
        }
    }
    if args.backoff.is_some() || args.backoff_base.is_some() || args.backoff_cap.is_some() {
        let mut duration = |lit: &Option<LitStr>, what: &str, default_ms: u64| -> u64 {
            match lit {
                None => default_ms,
                Some(l) => match humantime::parse_duration(&l.value()) {
                    Ok(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                    Err(e) => {
                        push(syn::Error::new(
                            l.span(),
                            format!("invalid {what}: {e} (examples: \"1s\", \"250ms\", \"10m\")"),
                        ));
                        0
                    }
                },
            }
        };
        let base = duration(&args.backoff_base, "backoff_base", 1_000);
        let cap = duration(&args.backoff_cap, "backoff_cap", 600_000);
        let d = |ms: u64| quote!(#krate::__private::Duration::from_millis(#ms));
        let (b, c) = (d(base), d(cap));
        let kind = args
            .backoff
            .as_ref()
            .map_or_else(|| "exponential".to_string(), LitStr::value);
        let policy = match kind.as_str() {
            "exponential" => Some(quote!(#krate::RetryPolicy::exponential(#b, #c))),
            "linear" => Some(quote!(#krate::RetryPolicy::linear(#b, #c))),
            "fixed" => Some(quote!(#krate::RetryPolicy::fixed(#b))),
            _ => {
                let span = args
                    .backoff
                    .as_ref()
                    .map_or_else(Span::call_site, LitStr::span);
                push(syn::Error::new(
                    span,
                    "backoff must be \"exponential\", \"linear\" or \"fixed\"",
                ));
                None
            }
        };
        if let Some(p) = policy {
            options.extend(quote!(.retry(#p)));
        }
    }
    let rate = |lit: &LitStr, what: &str| match parse_rate(&lit.value()) {
        Ok((count, ms, burst)) => {
            let burst = burst.map(|b| quote!(.with_burst(#b)));
            Ok(
                quote!(#krate::RateLimit::new(#count, #krate::__private::Duration::from_millis(#ms)) #burst),
            )
        }
        Err(e) => Err(syn::Error::new(
            lit.span(),
            format!("invalid {what}: {e} (examples: \"50/s\", \"100/1m\", \"10/500ms burst 1\")"),
        )),
    };
    if let Some(l) = &args.rate_limit {
        match rate(l, "rate_limit") {
            Ok(r) => options.extend(quote!(.rate_limit(#r))),
            Err(e) => push(e),
        }
    }
    let key_path: Option<Vec<syn::Ident>> = args.limit_key.as_ref().and_then(|l| {
        let v = l.value();
        let parts: Option<Vec<syn::Ident>> = v
            .split('.')
            .map(|p| syn::parse_str::<syn::Ident>(p).ok())
            .collect();
        if parts.is_none() {
            push(syn::Error::new(
                l.span(),
                "limit_key must name a field of the payload, like \"customer_id\" or \"account.id\"",
            ));
        }
        parts
    });
    match (&args.rate_limit_per_key, &args.limit_key) {
        (Some(l), Some(k)) => match rate(l, "rate_limit_per_key") {
            Ok(r) => {
                let field = k.value();
                options.extend(quote!(.rate_limit_per_key(#field, #r)));
            }
            Err(e) => push(e),
        },
        (Some(l), None) => push(syn::Error::new(
            l.span(),
            "rate_limit_per_key needs `limit_key = \"<payload field>\"`: the key each limit counts",
        )),
        _ => {}
    }
    let running = |l: &LitInt, what: &str| match l.base10_parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(syn::Error::new(
            l.span(),
            format!(
                "{what} must be a whole number from 1 to 4294967295 (0 lets nothing run: pause the queue instead)"
            ),
        )),
    };
    if let Some(l) = &args.concurrency_limit {
        match running(l, "concurrency_limit") {
            Ok(n) => options.extend(quote!(.concurrency_limit(#n))),
            Err(e) => push(e),
        }
    }
    match (&args.concurrency_limit_per_key, &args.limit_key) {
        (Some(l), Some(k)) => match running(l, "concurrency_limit_per_key") {
            Ok(n) => {
                let field = k.value();
                options.extend(quote!(.concurrency_limit_per_key(#field, #n)));
            }
            Err(e) => push(e),
        },
        (Some(l), None) => push(syn::Error::new(
            l.span(),
            "concurrency_limit_per_key needs `limit_key = \"<payload field>\"`: the key each limit counts",
        )),
        _ => {}
    }
    if let Some(e) = errors {
        return Err(e);
    }
    let limit_key_fn = key_path.map(|path| {
        quote! {
            fn limit_key(payload: &Self::Payload) -> ::core::option::Option<::std::string::String> {
                ::core::option::Option::Some(::std::string::ToString::to_string(&payload #(. #path)*))
            }
        }
    });

    let vis = &func.vis;
    let payload_ty = &typed[0].ty;
    let ctx_ty = &typed[1].ty;
    let payload_check = quote_spanned! {payload_ty.span()=>
        type Payload = #payload_ty;
    };
    // Checked where it is converted, so a wrong type gives one error, on the type.
    let ctx_check = quote_spanned! {ctx_ty.span()=>
        let to_ctx: fn(#krate::JobContext) -> #ctx_ty = |ctx| ctx;
    };
    // The call expression spans the return type, first token to last, so a return type
    // that does not fit is reported on the whole of it.
    let (ret_first, ret_last) = match &sig.output {
        ReturnType::Type(_, ty) => {
            let mut tokens = ty.to_token_stream().into_iter();
            let first = tokens.next().map_or_else(|| ty.span(), |t| t.span());
            let last = tokens.last().map_or(first, |t| t.span());
            (first, last)
        }
        ReturnType::Default => (sig.ident.span(), sig.ident.span()),
    };
    let mut callee = fn_ident.clone();
    callee.set_span(ret_first);
    let await_ = quote_spanned!(ret_last=> .await);
    let call = quote_spanned! {ret_first=>
        #krate::__private::Box::pin(async move {
            #krate::__private::into_job_error(#callee(payload, to_ctx(ctx)) #await_)
        })
    };
    let doc = format!(
        "Job handler for job type `{name}` on queue `{queue}`, made by `#[job_handler]` from [`{fn_ident}()`]."
    );

    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #fn_ident {}

        const _: () = {
        #use_krate

        impl #fn_ident {
            /// A typed job for this handler, ready to enqueue.
            #vis fn job(payload: #payload_ty) -> #krate::Job<#fn_ident> {
                #krate::Job::new(payload)
            }

            /// This handler, for `WorkerBuilder::handler`.
            #vis fn handler() -> Self {
                #fn_ident {}
            }
        }

        impl #krate::JobHandler for #fn_ident {
            #payload_check
            const NAME: &'static str = #name;
            const QUEUE: &'static str = #queue;
            const OPTIONS: #krate::HandlerOptions = #krate::HandlerOptions::new() #options;

            #limit_key_fn

            fn handle(
                &self,
                payload: Self::Payload,
                ctx: #krate::JobContext,
            ) -> #krate::__private::BoxFuture<'static, ::core::result::Result<(), #krate::JobError>> {
                #ctx_check
                #call
            }
        }
        };
    })
}
