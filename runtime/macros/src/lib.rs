//! The attribute macros of rayr: `#[rayr::remote]`, `#[rayr::actor]` and `#[rayr::main]`.
//!
//! `#[rayr::remote]` keeps the function callable as written and adds a type namespace item
//! of the same name (a braced struct, so it does not clash with the function) carrying
//! `remote(..)` and `options()`. It registers an invoker under the stable name
//! `module_path::name` in rayr's static registry; a worker runs a task by looking that name
//! up. `#[rayr::actor]` does the same for an actor's constructor (`module_path::Name`) and
//! each of its methods (`module_path::Name::method`), and generates `<Name>Handle`. This
//! crate only generates code: everything it calls lives in `rayr::__private`.

use proc_macro::TokenStream;
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Expr, FnArg, ItemFn, Lit, Meta, Pat, ReturnType, Token, Type, parse_macro_input};

/// Marks a function as a remote task: `f::remote(args…)` submits it and returns an
/// `ObjectRef`; `f::options()…remote(args…)` sets per-call options. Defaults may be given:
/// `#[rayr::remote(num_cpus = 0.5, max_retries = 3)]`.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let defaults = match Punctuated::<Meta, Token![,]>::parse_terminated.parse(attr) {
        Ok(d) => d,
        Err(e) => return e.to_compile_error().into(),
    };
    match expand_remote(func, defaults) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_remote(func: ItemFn, defaults: Punctuated<Meta, Token![,]>) -> syn::Result<proc_macro2::TokenStream> {
    let name = &func.sig.ident;
    let vis = &func.vis;
    if func.sig.asyncness.is_some() {
        return Err(syn::Error::new_spanned(&func.sig, "#[rayr::remote] functions must not be async (yet)"));
    }
    if !func.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&func.sig.generics, "#[rayr::remote] functions cannot be generic"));
    }
    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    for (i, input) in func.sig.inputs.iter().enumerate() {
        match input {
            FnArg::Typed(pt) => {
                let ident = match &*pt.pat {
                    Pat::Ident(pi) => pi.ident.clone(),
                    _ => format_ident!("__arg{i}"),
                };
                arg_names.push(ident);
                arg_types.push((*pt.ty).clone());
            }
            FnArg::Receiver(r) => return Err(syn::Error::new_spanned(r, "#[rayr::remote] cannot take self")),
        }
    }
    let (ret_ty, fallible) = match &func.sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => match result_ok_type(ty) {
            Some(ok) => (ok, true),
            None => ((**ty).clone(), false),
        },
    };
    let mut option_calls = Vec::new();
    for meta in defaults {
        let Meta::NameValue(nv) = meta else {
            return Err(syn::Error::new_spanned(meta, "expected `key = value`, e.g. num_cpus = 0.5"));
        };
        let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let value = &nv.value;
        let call = match key.as_str() {
            "num_cpus" | "num_gpus" | "memory" => {
                let m = format_ident!("{key}");
                quote!(.#m(#value as f64))
            }
            "max_retries" => quote!(.max_retries(#value)),
            "retry_exceptions" => quote!(.retry_exceptions(#value)),
            "name" => quote!(.name(#value)),
            _ => {
                return Err(syn::Error::new_spanned(
                    &nv.path,
                    "unknown option; expected num_cpus, num_gpus, memory, max_retries, retry_exceptions or name",
                ));
            }
        };
        if matches!(value, Expr::Lit(l) if matches!(l.lit, Lit::Str(_))) && key != "name" {
            return Err(syn::Error::new_spanned(value, "expected a number or bool"));
        }
        option_calls.push(call);
    }
    let invoker = format_ident!("__rayr_invoke_{}", name);
    let arg_idx: Vec<_> = (0..arg_names.len()).collect();
    let call_result = if fallible {
        quote! {
            match #name(#(#arg_names),*) {
                ::core::result::Result::Ok(v) => ::rayr::__private::Returned::value(&v),
                ::core::result::Result::Err(e) => ::rayr::__private::Returned::application_error(&e),
            }
        }
    } else {
        quote! { ::rayr::__private::Returned::value(&#name(#(#arg_names),*)) }
    };
    let fn_name = name.to_string();
    let opts_ty = format_ident!("__rayr_options_{}", name);
    Ok(quote! {
        #func

        #[doc(hidden)]
        #[allow(non_snake_case)]
        fn #invoker(args: &mut ::rayr::__private::ArgReader<'_>) -> ::rayr::__private::Returned {
            #(
                let #arg_names: #arg_types = match args.arg(#arg_idx) {
                    ::core::result::Result::Ok(v) => v,
                    ::core::result::Result::Err(e) => return ::rayr::__private::Returned::bad_argument(#arg_idx, e),
                };
            )*
            #call_result
        }

        ::rayr::__private::inventory::submit! {
            ::rayr::__private::RemoteFunction {
                name: ::core::concat!(::core::module_path!(), "::", #fn_name),
                invoke: #invoker,
            }
        }

        #[allow(non_camel_case_types)]
        #[doc = concat!("Remote handle of [`", #fn_name, "`]: `", #fn_name, "::remote(..)` submits it.")]
        #vis struct #name {}

        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        #vis struct #opts_ty {
            options: ::rayr::TaskOptions,
        }

        #[allow(dead_code)]
        impl #name {
            /// Submits the function as a task; never blocks and never fails here: errors
            /// surface when the returned ref is read.
            #vis fn remote(#( #arg_names: impl ::rayr::IntoArg<#arg_types> ),*) -> ::rayr::ObjectRef<#ret_ty> {
                Self::options().remote(#(#arg_names),*)
            }

            /// Per-call options; finish with `.remote(args…)`.
            #vis fn options() -> #opts_ty {
                #opts_ty { options: ::rayr::TaskOptions::default() #(#option_calls)* }
            }
        }

        #[allow(dead_code)]
        impl #opts_ty {
            ::rayr::__private::option_builders!();

            /// Submits with these options.
            #vis fn remote(self, #( #arg_names: impl ::rayr::IntoArg<#arg_types> ),*) -> ::rayr::ObjectRef<#ret_ty> {
                let args = ::std::vec![#( ::rayr::IntoArg::<#arg_types>::into_arg(#arg_names) ),*];
                ::rayr::__private::submit_task(::core::concat!(::core::module_path!(), "::", #fn_name), args, &self.options)
            }
        }
    })
}

/// `Result<T, E>` (any path ending in `Result` with a first generic argument) → `T`.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(tp) = ty else { return None };
    let last = tp.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(ab) = &last.arguments else { return None };
    match ab.args.first()? {
        syn::GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

/// Wraps `main` so that the same binary serves as driver and worker: in a worker process
/// (started by a node agent) it runs tasks and never returns into the user's `main`. In the
/// driver it runs `main` and then shuts rayr down cleanly.
#[proc_macro_attribute]
pub fn main(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let func = parse_macro_input!(item as ItemFn);
    let attrs = &func.attrs;
    let vis = &func.vis;
    let sig = &func.sig;
    let body = &func.block;
    let ret = match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, t) => quote!(#t),
    };
    quote! {
        #(#attrs)*
        #vis #sig {
            ::rayr::__private::run_worker_if_requested();
            let __rayr_result: #ret = (move || #body)();
            {
                // An `Err` from main fails the job (autoref: any other return type succeeds).
                use ::rayr::__private::{MainReturnedErr as _, MainReturnedOther as _};
                ::rayr::__private::main_returned((&__rayr_result).__rayr_main_failed());
            }
            ::rayr::shutdown();
            __rayr_result
        }
    }
    .into()
}

/// Marks an actor: on its struct, generates `<Name>Handle`; on its `impl` block, makes the
/// first associated function returning `Self` the constructor (`Name::remote(args…)`,
/// `Name::options()…remote(args…)` create the actor in a dedicated worker) and every
/// `&self` / `&mut self` method callable through the handle (`handle.method(args…)` returns
/// an `ObjectRef`; a method returning `Result<T, E>` gives `ObjectRef<T>`).
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(proc_macro2::Span::call_site(), "#[rayr::actor] takes no arguments (options go on `Name::options()`)")
            .to_compile_error()
            .into();
    }
    let result = if let Ok(s) = syn::parse::<syn::ItemStruct>(item.clone()) {
        expand_actor_struct(s)
    } else if let Ok(i) = syn::parse::<syn::ItemImpl>(item.clone()) {
        expand_actor_impl(i)
    } else {
        Err(syn::Error::new(proc_macro2::Span::call_site(), "#[rayr::actor] goes on a struct and on its impl block"))
    };
    match result {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_actor_struct(s: syn::ItemStruct) -> syn::Result<proc_macro2::TokenStream> {
    if !s.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&s.generics, "#[rayr::actor] types cannot be generic"));
    }
    let vis = &s.vis;
    let name = &s.ident;
    let handle = format_ident!("{}Handle", name);
    let doc = format!("A handle to a [`{name}`] actor: its methods called remotely; `Clone`, and may be passed to tasks.");
    Ok(quote! {
        #s

        #[doc = #doc]
        #[derive(Clone, Debug)]
        #vis struct #handle {
            inner: ::rayr::__private::ActorHandle,
        }

        impl #handle {
            /// The actor's id (`rayr why-died <id>` explains its end).
            pub fn id(&self) -> ::rayr::ActorId {
                self.inner.id()
            }
        }

        impl #handle {
            /// The live actor named `name` in `namespace`, from any process of the cluster
            /// (`Error::ActorNotFound` when none is).
            pub fn get_named(namespace: &str, name: &str) -> ::rayr::Result<Self> {
                ::rayr::__private::get_named(namespace, name).map(|inner| #handle { inner })
            }
        }

        impl ::rayr::__private::AsActorHandle for #handle {
            fn actor_handle(&self) -> &::rayr::__private::ActorHandle {
                &self.inner
            }
        }

        impl ::rayr::__private::serde::Serialize for #handle {
            fn serialize<S: ::rayr::__private::serde::Serializer>(&self, s: S) -> ::core::result::Result<S::Ok, S::Error> {
                ::rayr::__private::serde::Serialize::serialize(&self.inner, s)
            }
        }

        impl<'de> ::rayr::__private::serde::Deserialize<'de> for #handle {
            fn deserialize<D: ::rayr::__private::serde::Deserializer<'de>>(d: D) -> ::core::result::Result<Self, D::Error> {
                ::core::result::Result::Ok(#handle { inner: ::rayr::__private::serde::Deserialize::deserialize(d)? })
            }
        }
    })
}

fn expand_actor_impl(imp: syn::ItemImpl) -> syn::Result<proc_macro2::TokenStream> {
    if imp.trait_.is_some() || !imp.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(&imp.self_ty, "#[rayr::actor] goes on the type's own (non-generic) impl block"));
    }
    let Type::Path(tp) = &*imp.self_ty else {
        return Err(syn::Error::new_spanned(&imp.self_ty, "#[rayr::actor] expects `impl Name { … }`"));
    };
    let name = tp.path.segments.last().unwrap().ident.clone();
    let name_str = name.to_string();
    let handle = format_ident!("{}Handle", name);
    let opts_ty = format_ident!("__rayr_actor_options_{}", name);
    let mut constructor = None;
    let mut generated = Vec::new();
    let mut handle_methods = Vec::new();
    for item in &imp.items {
        let syn::ImplItem::Fn(f) = item else { continue };
        let receiver = f.sig.inputs.first().and_then(|a| match a {
            FnArg::Receiver(r) => Some(r.clone()),
            _ => None,
        });
        let mut arg_names = Vec::new();
        let mut arg_types = Vec::new();
        for (i, input) in f.sig.inputs.iter().enumerate() {
            if let FnArg::Typed(pt) = input {
                arg_names.push(match &*pt.pat {
                    Pat::Ident(pi) => pi.ident.clone(),
                    _ => format_ident!("__arg{i}"),
                });
                arg_types.push((*pt.ty).clone());
            }
        }
        let arg_idx: Vec<usize> = (0..arg_names.len()).collect();
        let fname = &f.sig.ident;
        let fname_str = fname.to_string();
        if matches!(fname_str.as_str(), "remote" | "options") || (receiver.is_some() && matches!(fname_str.as_str(), "id" | "get_named")) {
            return Err(syn::Error::new_spanned(
                fname,
                format!("`{fname_str}` is generated by #[rayr::actor] (`{name}::remote`/`options` create the actor; `{name}Handle::id`/`get_named` find it): rename this method"),
            ));
        }
        let returns_self = match &f.sig.output {
            ReturnType::Type(_, t) => matches!(&**t, Type::Path(p) if p.path.is_ident("Self") || p.path.segments.last().is_some_and(|s| s.ident == name)),
            ReturnType::Default => false,
        };
        if !f.sig.generics.params.is_empty() && (receiver.is_some() || (returns_self && constructor.is_none())) {
            return Err(syn::Error::new_spanned(&f.sig.generics, "actor methods and constructors cannot be generic: a call names one concrete signature"));
        }
        match receiver {
            None if returns_self && constructor.is_none() => {
                if f.sig.asyncness.is_some() {
                    return Err(syn::Error::new_spanned(&f.sig, "an actor's constructor must not be async"));
                }
                let invoker = format_ident!("__rayr_actor_new_{}", name);
                let sync_probe = format_ident!("__rayr_actor_sync_{}", name);
                generated.push(quote! {
                    #[doc(hidden)]
                    #[allow(non_snake_case)]
                    fn #invoker(
                        args: &mut ::rayr::__private::ArgReader<'_>,
                    ) -> ::core::result::Result<::std::boxed::Box<dyn ::core::any::Any + ::core::marker::Send>, ::rayr::__private::Returned> {
                        #(
                            let #arg_names: #arg_types = match args.arg(#arg_idx) {
                                ::core::result::Result::Ok(v) => v,
                                ::core::result::Result::Err(e) => return ::core::result::Result::Err(::rayr::__private::Returned::bad_argument(#arg_idx, e)),
                            };
                        )*
                        ::core::result::Result::Ok(::std::boxed::Box::new(#name::#fname(#(#arg_names),*)))
                    }

                    #[doc(hidden)]
                    #[allow(non_snake_case)]
                    fn #sync_probe() -> bool {
                        #[allow(unused_imports)]
                        use ::rayr::__private::{IsSync as _, NotSync as _};
                        (&::rayr::__private::SyncProbe::<#name>::new()).__rayr_is_sync()
                    }

                    ::rayr::__private::inventory::submit! {
                        ::rayr::__private::ActorClass {
                            name: ::core::concat!(::core::module_path!(), "::", #name_str),
                            construct: #invoker,
                            sync: #sync_probe,
                        }
                    }
                });
                constructor = Some((arg_names.clone(), arg_types.clone()));
            }
            Some(r) => {
                if f.sig.asyncness.is_some() {
                    return Err(syn::Error::new_spanned(&f.sig, "actor methods must not be async (yet)"));
                }
                if r.reference.is_none() {
                    return Err(syn::Error::new_spanned(r, "actor methods take &self or &mut self"));
                }
                let (ret_ty, fallible) = match &f.sig.output {
                    ReturnType::Default => (syn::parse_quote!(()), false),
                    ReturnType::Type(_, ty) => match result_ok_type(ty) {
                        Some(ok) => (ok, true),
                        None => ((**ty).clone(), false),
                    },
                };
                let call = quote!(this.#fname(#(#arg_names),*));
                let returned = if fallible {
                    quote! {
                        match #call {
                            ::core::result::Result::Ok(v) => ::rayr::__private::Returned::value(&v),
                            ::core::result::Result::Err(e) => ::rayr::__private::Returned::application_error(&e),
                        }
                    }
                } else {
                    quote!(::rayr::__private::Returned::value(&#call))
                };
                let invoker = format_ident!("__rayr_actor_{}_{}", name, fname);
                let shared_invoker = format_ident!("__rayr_actor_shared_{}_{}", name, fname);
                let method_name = quote!(::core::concat!(::core::module_path!(), "::", #name_str, "::", #fname_str));
                let read_args = quote! {
                    #(
                        let #arg_names: #arg_types = match args.arg(#arg_idx) {
                            ::core::result::Result::Ok(v) => v,
                            ::core::result::Result::Err(e) => return ::rayr::__private::Returned::bad_argument(#arg_idx, e),
                        };
                    )*
                };
                let wrong_type = quote! {
                    return ::rayr::__private::Returned::bad_argument(0, ::std::string::String::from("this worker hosts an actor of another type"))
                };
                // `&self` methods can also be called with shared access (concurrent calls).
                let (shared_fn, shared) = if r.mutability.is_none() {
                    let f = quote! {
                        #[doc(hidden)]
                        #[allow(non_snake_case)]
                        fn #shared_invoker(
                            state: &(dyn ::core::any::Any + ::core::marker::Send),
                            args: &mut ::rayr::__private::ArgReader<'_>,
                        ) -> ::rayr::__private::Returned {
                            let ::core::option::Option::Some(this) = state.downcast_ref::<#name>() else { #wrong_type };
                            #read_args
                            #returned
                        }
                    };
                    (f, quote!(::core::option::Option::Some(#shared_invoker)))
                } else {
                    (quote!(), quote!(::core::option::Option::None))
                };
                generated.push(quote! {
                    #[doc(hidden)]
                    #[allow(non_snake_case)]
                    fn #invoker(
                        state: &mut (dyn ::core::any::Any + ::core::marker::Send),
                        args: &mut ::rayr::__private::ArgReader<'_>,
                    ) -> ::rayr::__private::Returned {
                        let ::core::option::Option::Some(this) = state.downcast_mut::<#name>() else { #wrong_type };
                        #read_args
                        #returned
                    }

                    #shared_fn

                    ::rayr::__private::inventory::submit! {
                        ::rayr::__private::ActorMethod { name: #method_name, invoke: #invoker, shared: #shared }
                    }
                });
                handle_methods.push(quote! {
                    /// Calls the actor's method; the result's ref (calls from one caller run in order).
                    pub fn #fname(&self, #( #arg_names: impl ::rayr::IntoArg<#arg_types> ),*) -> ::rayr::ObjectRef<#ret_ty> {
                        let args = ::std::vec![#( ::rayr::IntoArg::<#arg_types>::into_arg(#arg_names) ),*];
                        self.inner.call(#method_name, args)
                    }
                });
            }
            None => {}
        }
    }
    let Some((ctor_names, ctor_types)) = constructor else {
        return Err(syn::Error::new_spanned(&imp.self_ty, "an actor needs a constructor: an associated fn returning Self"));
    };
    Ok(quote! {
        #imp

        #(#generated)*

        #[allow(dead_code)]
        impl #handle {
            #(#handle_methods)*
        }

        #[allow(non_camel_case_types)]
        #[doc(hidden)]
        pub struct #opts_ty {
            options: ::rayr::TaskOptions,
        }

        #[allow(dead_code)]
        impl #name {
            /// Creates the actor in a worker of its own; never blocks (a failed creation
            /// fails its calls).
            pub fn remote(#( #ctor_names: impl ::rayr::IntoArg<#ctor_types> ),*) -> #handle {
                Self::options().remote(#(#ctor_names),*)
            }

            /// Options for the actor; finish with `.remote(args…)`.
            pub fn options() -> #opts_ty {
                // An actor holds no CPU while it lives unless asked to (as in Ray).
                #opts_ty { options: ::rayr::TaskOptions::default().num_cpus(0.0) }
            }
        }

        #[allow(dead_code)]
        impl #opts_ty {
            ::rayr::__private::option_builders!();

            /// Creates the actor with these options.
            pub fn remote(self, #( #ctor_names: impl ::rayr::IntoArg<#ctor_types> ),*) -> #handle {
                let args = ::std::vec![#( ::rayr::IntoArg::<#ctor_types>::into_arg(#ctor_names) ),*];
                #handle { inner: ::rayr::__private::create_actor(::core::concat!(::core::module_path!(), "::", #name_str), args, &self.options) }
            }
        }
    })
}
